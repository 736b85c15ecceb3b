"""The PostgreSQL adapter: asyncpg, and each write one statement from ``sql/``.

Each statement is its own transaction: no BEGIN and COMMIT round trips, and nothing left on
the connection between requests (no session settings, no open transaction), so a
connection can go back to the pool as it is. Statements that check what they read still
holds fail as a serialization failure when it does not (see retry.py).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from restock_service import idempotency
from restock_service.access import Caller, Role
from restock_service.config import Settings
from restock_service.idempotency import Keyed, KeyRow, KeyState, state_of
from restock_service.keys import KeyRecord
from restock_service.merchants import Merchant
from restock_service.messages import RECORDED_STATUS, Code, Mall, RestockStatus, SyncCode
from restock_service.retry import Runner
from restock_service.rules import (
    Decision,
    Line,
    Snapshot,
    SyncDecision,
    decide_orders,
    decide_repeat,
    decide_sync,
    record_lines,
    restock_moves,
)
from restock_service.schemas import (
    MovementOut,
    RestockRecordOut,
    StockOut,
    SyncExecutionIn,
    SyncExecutionOut,
)
from restock_service.scope import Scope
from restock_service.store import (
    UNWATCHED,
    LedgerPosition,
    PoolWatch,
    failing_merchants,
    key_record,
    key_row,
    restock_records,
    sync_execution,
)
from restock_service.store.receipts import Receipt, head_of
from restock_service.store.statements import Statement, statement
from restock_service.tables import PLATFORM

log = logging.getLogger(__name__)
T = TypeVar("T")

# The server ended the session: admin_shutdown, crash_shutdown, cannot_connect_now.
LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# idempotency_key_held_if (migration 0007): a keyed statement found its key held.
KEY_HELD_SQLSTATE = "RK409"
# The primary key of idempotency_keys: a keyed statement met a row that holds its key.
KEY_CONSTRAINT = "pk_idempotency_keys"
# Connect arguments that are SQLAlchemy's own, not asyncpg's.
_SQLALCHEMY_CONNECT_ARGS = ("prepared_statement_cache_size", "prepared_statement_name_func")


def connect_args(database_url: str) -> dict[str, Any]:
    """asyncpg's connect arguments for a SQLAlchemy URL, its query (ssl, …) included."""
    _, args = asyncpg_dialect().create_connect_args(make_url(database_url))  # type: ignore[no-untyped-call]
    for sqlalchemy_only in _SQLALCHEMY_CONNECT_ARGS:
        args.pop(sqlalchemy_only, None)
    return dict(args)


def _sqlstate(exc: Exception) -> str | None:
    return getattr(exc, "sqlstate", None)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Connections go back to the pool without asyncpg's reset query (a round trip per
    request): no statement leaves session state behind, and asyncpg still rolls back a
    connection left inside a transaction and drops a broken one."""


class PostgresStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner = Runner(
            attempts=settings.db_retry_attempts, deadline_s=settings.db_deadline_s
        )
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._pooled = settings.db_pooler == "transaction"
        self._watch = UNWATCHED
        self._columns: dict[str, list[tuple[str, str]]] = {}  # by statement, for replays

    async def pool(self) -> asyncpg.Pool:
        """The pool, opened on first use; it opens connections as they are needed."""
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        **connect_args(self.settings.database_url),
                        min_size=0,
                        max_size=self.settings.db_pool_size,
                        max_inactive_connection_lifetime=0,
                        timeout=self.settings.db_connect_timeout_s,
                        command_timeout=self.settings.db_deadline_s,
                        # UTC: a receipt keeps timestamps as JSON text (store/receipts.py).
                        server_settings={"application_name": "restock-service", "TimeZone": "UTC"},
                        reset=_keep_session,
                        # Behind a pooler in transaction mode a connection's next transaction
                        # may run on another server connection, where a named statement
                        # prepared by this one does not exist.
                        statement_cache_size=0 if self._pooled else 100,
                        init=self._opened,
                    )
        return self._pool

    async def _opened(self, connection: asyncpg.Connection) -> None:
        """Count a new connection open until asyncpg closes it, for whatever reason."""
        count = self._watch.open
        count.inc()
        connection.add_termination_listener(lambda _connection: count.dec())

    async def fetch(self, scope: Scope, name: str, /, **params: Any) -> list[asyncpg.Record]:
        """Run the statement ``sql/NAME.sql`` on the scope's merchant's data, with ``params``
        and ``:merchant``, which every statement run so constrains, as a unit of its own."""
        params["merchant"] = scope.merchant
        return await self.fetch_platform(scope, name, **params)

    async def fetch_platform(
        self, scope: Scope, name: str, /, **params: Any
    ) -> list[asyncpg.Record]:
        """Run the statement ``sql/NAME.sql`` on what is no merchant's data (the merchants,
        the keys), in ``scope``, with ``params``, as a unit of its own."""
        return await self._runner.run(
            self._unit(scope, lambda: self._fetch_once(scope, name, params)), _sqlstate
        )

    @staticmethod
    def _unit(scope: Scope, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``attempt`` as a unit of work: a keyed request's rows start afresh with each try
        (an unkeyed one's unit is ``attempt`` itself)."""
        request = scope.keyed
        if request is None:
            return attempt

        async def unit() -> T:
            request.restart()
            return await attempt()

        return unit

    async def _fetch_once(self, scope: Scope, name: str, params: dict[str, Any]) -> list[Any]:
        """Run the statement ``sql/NAME.sql`` once, as part of a unit. In a keyed request a
        write statement runs keyed (statements.py), and every statement's rows are noted, for
        the receipt of the write; in a replay they come from the receipt."""
        query = statement(name)
        request = scope.keyed
        if request is None:
            return await self._run(query, params)
        if request.receipt is not None:
            return await self._replayed(request, query)
        if query.writes:
            rows = await self._keyed(request, statement(name, keyed=True), params)
        else:
            rows = await self._run(query, params)
        request.rows.append(rows)
        return rows

    async def _keyed(
        self, request: Keyed, query: Statement, params: dict[str, Any]
    ) -> list[asyncpg.Record]:
        """Run a keyed write statement; raise KeyHeld when the key is another request's. A
        row that holds the key but no longer counts (``state_of``) is removed, and the
        statement run again."""
        for _ in range(2):
            try:
                return await self._run(query, {**params, **_key_params(request)})
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != KEY_CONSTRAINT:
                    raise
                if not await self._forget_if_free(request.claim):
                    raise idempotency.refuse(request) from exc
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == KEY_HELD_SQLSTATE:
                    raise idempotency.refuse(request) from exc
                raise
        raise idempotency.refuse(request)

    async def _forget_if_free(self, claim: idempotency.Claim) -> bool:
        """Remove the row of the claim's key if ``state_of`` says it holds nothing now."""
        key = {"merchant": claim.merchant, "owner": claim.owner, "key": claim.key}
        rows = await self._run(statement("key_get"), key)
        if rows:
            held = key_row(rows[0])
            if state_of(held, claim.now) is not KeyState.FREE:
                return False
            await self._run(statement("key_forget"), {**key, "created_at": held.created_at})
        return True

    async def _run(self, query: Statement, params: dict[str, Any]) -> list[asyncpg.Record]:
        args = query.args(params)
        async with self._connection() as connection:  # bounded by the unit's deadline
            if self._pooled:  # its Parse and its Bind must reach the same server
                async with connection.transaction():
                    return list(await connection.fetch(query.text, *args))
            return list(await connection.fetch(query.text, *args))

    async def _replayed(self, request: Keyed, query: Statement) -> list[Any]:
        """The rows the statement returned when the request was first answered."""
        assert request.receipt is not None
        if query.name not in self._columns:  # what the receipt's JSON does not say
            async with self._connection() as connection, connection.transaction():
                prepared = await connection.prepare(query.text)
                self._columns[query.name] = [
                    (a.name, a.type.name) for a in prepared.get_attributes()
                ]
        rows = Receipt(request.receipt).rows(request.replayed, self._columns[query.name])
        request.replayed += 1
        return rows

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, counted in use while it is held; when it turns out lost,
        the pool's idle ones are expired (``_expire_if_lost``)."""
        pool = await self.pool()
        in_use = self._watch.in_use
        async with pool.acquire() as connection:
            in_use.inc()
            try:
                yield connection
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                await self._expire_if_lost(connection, exc)
                raise
            finally:
                in_use.dec()

    async def _expire_if_lost(self, connection: Any, exc: Exception) -> None:
        """After a connection was lost, the pool's idle ones are replaced on their next use.

        They are likely lost too (a failover, a restart, a proxy gone) without their sockets
        showing it yet: expiring them means one request meets a lost connection, not one per
        pooled connection. A statement that merely failed or timed out expires nothing.
        """
        if isinstance(exc, asyncpg.PostgresError):
            sqlstate = exc.sqlstate or ""
            lost = sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_SQLSTATES
        else:
            lost = isinstance(exc, asyncpg.InterfaceError | ConnectionError)
        if (lost or connection.is_closed()) and self._pool is not None:
            await self._pool.expire_connections()

    # --- restocks --------------------------------------------------------------------------

    async def restock(
        self, scope: Scope, mall: Mall, order_nos: Sequence[str], now: datetime
    ) -> dict[str, Decision]:
        """Usually one statement: restock_load_or_restore reads and, when every order is
        restorable, restores. Otherwise restock_write writes what the rules decided; when
        what they read has moved, the unit is run again from the read."""
        if not order_nos:
            return {}
        return await self._runner.run(
            self._unit(scope, lambda: self._restock(scope, mall, order_nos, now)), _sqlstate
        )

    async def _restock(
        self, scope: Scope, mall: Mall, order_nos: Sequence[str], now: datetime
    ) -> dict[str, Decision]:
        rows = await self._fetch_once(
            scope,
            "restock_load_or_restore",
            {
                "merchant": scope.merchant,
                "order_nos": list(order_nos),
                "mall": mall.value,
                "now": now,
                "reason": "restock",
                "actor": scope.actor,
            },
        )
        recorded: dict[str, RestockStatus] = {}
        malls: dict[str, Mall] = {}
        lines: dict[str, list[Line]] = {}
        registered: set[str] = set()
        for row in rows:
            order_no = row["order_no"]
            if row["status"] is not None:
                recorded[order_no] = RestockStatus(row["status"])
            if row["mall"] is not None:
                malls[order_no] = Mall(row["mall"])
                order_lines = lines.setdefault(order_no, [])
                if row["sku"] is not None:  # (an execution is never recorded without lines)
                    order_lines.append(Line(row["sku"], row["quantity"]))
                    if row["registered"]:
                        registered.add(row["sku"])
        snapshots = {n: Snapshot(malls[n], tuple(ls)) for n, ls in lines.items()}
        decisions = decide_orders(mall, order_nos, recorded, snapshots, registered)
        if rows[0]["applied"]:
            return self._restored(order_nos, decisions, snapshots)

        new = {n: d for n, d in decisions.items() if d.code in RECORDED_STATUS}
        # The skus the new records' decisions rest on: those of orders that may be restored.
        read = sorted(
            {
                line.sku
                for n in new
                if n in snapshots and snapshots[n].mall == mall
                for line in snapshots[n].lines
            }
        )
        new_order_nos = sorted(new)
        record = record_lines(new)
        moves = restock_moves([n for n in order_nos if n in new], new)
        repeats = await self._fetch_once(
            scope,
            "restock_write",
            {
                "merchant": scope.merchant,
                "mall": mall.value,
                "now": now,
                "reason": "restock",
                "actor": scope.actor,
                "new_order_nos": new_order_nos,
                "new_statuses": [RECORDED_STATUS[new[n].code].value for n in new_order_nos],
                "new_codes": [new[n].code.value for n in new_order_nos],
                "line_order_nos": [line[0] for line in record],
                "line_skus": [line[1] for line in record],
                "line_positions": [line[2] for line in record],
                "line_quantities": [line[3] for line in record],
                "line_missing": [line[4] for line in record],
                "move_skus": [move[0] for move in moves],
                "move_deltas": [move[1] for move in moves],
                "move_order_nos": [move[2] for move in moves],
                "read_skus": read,
                "registered_skus": [sku for sku in read if sku in registered],
                "repeats": sorted(recorded),
            },
        )
        for row in repeats:
            if row["order_no"] is not None:
                decisions[row["order_no"]] = decide_repeat(
                    RestockStatus(row["status"]), snapshots.get(row["order_no"])
                )
        return decisions

    @staticmethod
    def _restored(
        order_nos: Sequence[str], decisions: dict[str, Decision], snapshots: dict[str, Snapshot]
    ) -> dict[str, Decision]:
        """What restock_load_or_restore did: it restored every order. The rules decide the
        same (tests/test_pg_statements.py); should they ever not, the answer still says what
        happened to the stock, and the disagreement is logged as the defect it is."""
        if any(d.code is not Code.RESTORED for d in decisions.values()):
            log.error("restored orders that the rules do not restore: %s", decisions)
            return {n: Decision(Code.RESTORED, snapshots[n].lines) for n in order_nos}
        return decisions

    async def restock_record(self, scope: Scope, order_no: str) -> RestockRecordOut | None:
        records = restock_records(await self.fetch(scope, "restock_record", order_no=order_no))
        return records[0] if records else None

    async def restock_records(
        self,
        scope: Scope,
        *,
        status: RestockStatus | None,
        mall: Mall | None,
        after: tuple[datetime, str] | None,
        limit: int,
        newest_first: bool = False,
    ) -> list[RestockRecordOut]:
        rows = await self.fetch(
            scope,
            "restock_records_newest" if newest_first else "restock_records",
            status=status.value if status else None,
            mall=mall.value if mall else None,
            after_at=after[0] if after else None,
            after_order_no=after[1] if after else None,
            limit=limit,
        )
        return restock_records(rows)

    async def resolve_restock(
        self, scope: Scope, order_no: str, note: str, resolved_by: str, now: datetime
    ) -> RestockRecordOut | RestockStatus | None:
        rows = await self.fetch(
            scope,
            "restock_resolve",
            order_no=order_no,
            note=note,
            resolved_by=resolved_by,
            now=now,
            actor=scope.actor,
        )
        if not rows[0]["settled"]:
            was = rows[0]["was"]
            return None if was is None else RestockStatus(was)
        return restock_records(rows)[0]

    # --- stock -----------------------------------------------------------------------------

    async def set_stock(self, scope: Scope, sku: str, quantity: int, now: datetime) -> StockOut:
        (row,) = await self.fetch(
            scope, "stock_set", sku=sku, quantity=quantity, now=now, actor=scope.actor
        )
        return StockOut(**row)

    async def stock(self, scope: Scope, sku: str) -> StockOut | None:
        rows = await self.fetch(scope, "stock_get", sku=sku)
        return StockOut(**rows[0]) if rows else None

    async def delete_stock(self, scope: Scope, sku: str, now: datetime) -> bool:
        return bool(await self.fetch(scope, "stock_delete", sku=sku, now=now, actor=scope.actor))

    async def adjust_stock(
        self,
        scope: Scope,
        sku: str,
        delta: int,
        note: str,
        order_no: str | None,
        now: datetime,
        *,
        limit: int,
    ) -> tuple[StockOut, bool] | None:
        rows = await self.fetch(
            scope,
            "stock_adjust",
            sku=sku,
            delta=delta,
            note=note,
            order_no=order_no,
            now=now,
            limit=limit,
            actor=scope.actor,
        )
        if not rows:
            return None
        sku_, quantity, updated_at, adjusted = rows[0]
        return StockOut(sku=sku_, quantity=quantity, updated_at=updated_at), adjusted

    async def movements(
        self, scope: Scope, sku: str, after_id: int, limit: int
    ) -> list[MovementOut] | None:
        rows = await self.fetch(scope, "stock_movements", sku=sku, after_id=after_id, limit=limit)
        if not rows and not (await self.fetch(scope, "stock_ever_registered", sku=sku))[0][0]:
            return None
        return [MovementOut(**row) for row in rows]

    async def order_movements(self, scope: Scope, order_no: str) -> list[MovementOut]:
        rows = await self.fetch(scope, "order_movements", order_no=order_no)
        return [MovementOut(**row) for row in rows]

    async def failure_counts(self, scope: Scope) -> dict[Mall, int]:
        rows = await self.fetch(scope, "failure_counts")
        return {Mall(row["mall"]): row["failures"] for row in rows}

    async def ledger_window(
        self, scope: Scope, after: tuple[int, int], limit: int
    ) -> list[LedgerPosition]:
        rows = await self.fetch(
            scope, "ledger_window", after_txid=after[0], after_id=after[1], limit=limit
        )
        return [LedgerPosition(*row) for row in rows]

    async def quantities(self, scope: Scope, skus: Sequence[str]) -> dict[str, int]:
        rows = await self.fetch(scope, "stock_quantities", skus=list(skus))
        return {row["sku"]: row["quantity"] for row in rows}

    # --- sync executions -------------------------------------------------------------------

    async def record_sync_executions(
        self, scope: Scope, executions: Sequence[SyncExecutionIn], now: datetime
    ) -> list[SyncDecision]:
        """One statement for the whole batch (sync_record.sql); the rules name each result."""
        items = [(e.order_no, i) for e in executions for i in e.items]
        positions = [p for e in executions for p in range(len(e.items))]
        rows = await self.fetch(
            scope,
            "sync_record",
            now=now,
            reason="sync_execution",
            actor=scope.actor,
            order_nos=[e.order_no for e in executions],
            malls=[e.mall.value for e in executions],
            executed_ats=[e.executed_at or now for e in executions],
            item_order_nos=[order_no for order_no, _ in items],
            item_skus=[item.sku for _, item in items],
            item_positions=positions,
            item_quantities=[item.quantity for _, item in items],
        )
        decisions = []
        for row in rows:
            missing = list(row["missing"])
            # Not recorded with every sku registered: another execution was there first.
            before = row["existed"] or (not row["recorded"] and not missing)
            decision = decide_sync(row["order_no"], recorded_before=before, missing_skus=missing)
            if (decision.code is SyncCode.RECORDED) != row["recorded"]:
                log.error("sync_record and rules.decide_sync disagree on %s", row["order_no"])
            decisions.append(decision)
        return decisions

    async def sync_execution(self, scope: Scope, order_no: str) -> SyncExecutionOut | None:
        return sync_execution(await self.fetch(scope, "sync_execution", order_no=order_no))

    # --- merchants ---------------------------------------------------------------------

    async def merchant(self, merchant_id: str) -> Merchant | None:
        rows = await self.fetch_platform(Scope(PLATFORM), "merchant_get", merchant_id=merchant_id)
        return Merchant(**rows[0]) if rows else None

    async def merchants(self, after: str | None, limit: int) -> list[Merchant]:
        rows = await self.fetch_platform(
            Scope(PLATFORM), "merchants_page", after_id=after, limit=limit
        )
        return [Merchant(**row) for row in rows]

    async def put_merchant(
        self, scope: Scope, merchant_id: str, name: str, now: datetime, *, rename: bool
    ) -> tuple[Merchant, bool]:
        (row,) = await self.fetch_platform(
            scope, "merchant_put", merchant_id=merchant_id, name=name, now=now, rename=rename
        )
        *merchant, created = row
        return Merchant(*merchant), created

    async def failures_by_merchant(
        self, after: str | None, limit: int
    ) -> list[tuple[Merchant, dict[Mall, int]]]:
        rows = await self.fetch_platform(
            Scope(PLATFORM), "failures_by_merchant", after_id=after, limit=limit
        )
        return failing_merchants(rows)

    # --- keys ----------------------------------------------------------------------------

    async def api_key(self, digest: bytes, now: datetime, noted_before: datetime) -> Caller | None:
        rows = await self.fetch_platform(
            Scope(PLATFORM), "api_key_find", digest=digest, now=now, noted_before=noted_before
        )
        return (
            Caller(rows[0]["name"], Role(rows[0]["role"]), rows[0]["merchant_id"]) if rows else None
        )

    async def api_keys_exist(self) -> bool:
        ((exist,),) = await self.fetch_platform(Scope(PLATFORM), "api_keys_exist")
        return bool(exist)

    async def add_api_key(
        self, scope: Scope, merchant_id: str, name: str, role: Role, digest: bytes, now: datetime
    ) -> KeyRecord | None:
        rows = await self.fetch_platform(
            scope,
            "api_key_add",
            merchant_id=merchant_id,
            name=name,
            role=role,
            digest=digest,
            now=now,
        )
        return key_record(rows[0]) if rows else None

    async def api_keys(self, merchant_id: str | None) -> list[KeyRecord]:
        rows = await self.fetch_platform(Scope(PLATFORM), "api_keys_list", merchant_id=merchant_id)
        return [key_record(row) for row in rows]

    async def revoke_api_key(
        self, scope: Scope, merchant_id: str, name: str, now: datetime
    ) -> bool:
        rows = await self.fetch_platform(
            scope, "api_key_revoke", merchant_id=merchant_id, name=name, now=now
        )
        return bool(rows)

    # --- idempotency keys ------------------------------------------------------------------

    async def key(self, merchant: str, owner: str, key: str) -> KeyRow | None:
        params = {"merchant": merchant, "owner": owner, "key": key}
        rows = await self._runner.run(lambda: self._run(statement("key_get"), params), _sqlstate)
        return key_row(rows[0]) if rows else None

    async def purge_keys(self, now: datetime, limit: int) -> int:
        ((removed,),) = await self._runner.run(
            lambda: self._run(statement("key_purge"), {"now": now, "limit": limit}), _sqlstate
        )
        return int(removed)

    # --- console sign-outs -----------------------------------------------------------------

    async def sign_out(self, sid: str, expires_at: datetime) -> None:
        params = {"sid": sid, "expires_at": expires_at}
        await self._runner.run(lambda: self._run(statement("sign_out"), params), _sqlstate)

    async def signed_out(self, sid: str) -> bool:
        ((found,),) = await self._runner.run(
            lambda: self._run(statement("signed_out"), {"sid": sid}), _sqlstate
        )
        return bool(found)

    async def purge_sign_outs(self, now: datetime, limit: int) -> int:
        ((removed,),) = await self._runner.run(
            lambda: self._run(statement("sign_out_purge"), {"now": now, "limit": limit}),
            _sqlstate,
        )
        return int(removed)

    # --- the service -----------------------------------------------------------------------

    async def schema_revision(self) -> str | None:
        try:
            rows = await self._runner.run(
                lambda: self._run(statement("schema_revision"), {}), _sqlstate
            )
        except asyncpg.UndefinedTableError:
            return None
        return rows[0][0] if rows else None

    def watch_pool(self, watch: PoolWatch) -> None:
        """Connections count as open from asyncpg's ``init`` to their termination listener
        (closed, or lost), and as in use while a unit holds one: two updates per unit, and
        no walk over the pool's connections, as ``get_size()`` would take."""
        self._watch = watch

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:  # a clean goodbye to each connection, unless the server does not answer
            await asyncio.wait_for(pool.close(), self.settings.db_connect_timeout_s)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pool.terminate()


def _key_params(request: Keyed) -> dict[str, Any]:
    """A keyed statement's parameters besides its own (statements.py)."""
    claim = request.claim
    return {
        "merchant": claim.merchant,
        "key_owner": claim.owner,
        "key": claim.key,
        "key_fingerprint": claim.fingerprint,
        "key_expires_at": claim.expires_at,
        "key_receipt_head": head_of(request.rows),
    }
