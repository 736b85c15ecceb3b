"""The SQLite adapter: SQLAlchemy Core on aiosqlite, the embedded default.

Every write is one ``BEGIN IMMEDIATE`` transaction: it holds SQLite's one write lock from
its first read to its commit, so what it read stays true while it writes. This process's
writers queue on an asyncio lock rather than spin in SQLite's busy handler. A keyed write
(idempotency.py) takes its key in that transaction and keeps its result there, pickled, as
the key's receipt; a replay returns the receipt's result.
"""

import asyncio
import json
import pickle
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service import idempotency
from restock_service.access import Caller, Role
from restock_service.config import Settings
from restock_service.engine import create_engine, read_only
from restock_service.idempotency import Keyed, KeyRow, KeyState, state_of
from restock_service.keys import KeyRecord
from restock_service.merchants import Merchant
from restock_service.messages import RECORDED_STATUS, Mall, RestockStatus, SyncCode
from restock_service.migrations import current_revision
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
    LedgerPosition,
    PoolWatch,
    failing_merchants,
    key_record,
    key_row,
    restock_records,
    sync_execution,
)
from restock_service.tables import (
    UTCDateTime,
    api_keys,
    console_sign_outs,
    idempotency_keys,
    merchants,
    restock_lines,
    restocks,
    stock,
    stock_movements,
    sync_execution_lines,
    sync_executions,
)

T = TypeVar("T")

_MOVEMENT = sa.select(
    *(
        stock_movements.c[name]
        for name in (
            "id",
            "sku",
            "delta",
            "quantity_after",
            "reason",
            "order_no",
            "at",
            "note",
            "actor",
        )
    )
)  # the columns of a MovementOut


def _one_of(column: sa.ColumnElement[str], values: Iterable[str]) -> sa.ColumnElement[bool]:
    """``column IN values`` as one bound parameter (a JSON array), whatever their number."""
    members = sa.select(sa.column("value", sa.String)).select_from(
        sa.func.json_each(sa.bindparam(None, json.dumps(list(values)), type_=sa.String))
    )
    return column.in_(members.scalar_subquery())


def _sqlstate(exc: Exception) -> str | None:
    """SQLite's error name: none is retryable, as writers hold the one lock from BEGIN."""
    return getattr(getattr(exc, "orig", None), "sqlite_errorname", None)


class SqliteStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self._reader = read_only(self.engine)
        self._write_lock = asyncio.Lock()
        self._runner = Runner(
            attempts=settings.db_retry_attempts, deadline_s=settings.db_deadline_s
        )

    async def write(
        self, scope: Scope | None, work: Callable[[AsyncConnection], Awaitable[T]]
    ) -> T:
        """Run ``work`` in one write transaction, taking the key of the scope's keyed
        request with it (or answering from the receipt it holds). The deployment's own
        housekeeping, of no merchant, has no scope."""
        request = scope.keyed if scope is not None else None
        if request is not None and request.receipt is not None:
            result: T = pickle.loads(request.receipt)  # kept by this adapter, below
            return result

        async def unit() -> T:
            async with self._write_lock, self.engine.begin() as conn:
                if request is None:
                    return await work(conn)
                await _take(conn, request)
                result = await work(conn)
                await _keep(conn, request, result)
                return result

        return await self._runner.run(unit, _sqlstate)

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one read transaction (what it reads is the caller's to scope)."""

        async def unit() -> T:
            async with self._reader.begin() as conn:
                return await work(conn)

        return await self._runner.run(unit, _sqlstate)

    # --- restocks --------------------------------------------------------------------------

    async def restock(
        self, scope: Scope, mall: Mall, order_nos: Sequence[str], now: datetime
    ) -> dict[str, Decision]:
        merchant = scope.merchant

        async def work(conn: AsyncConnection) -> dict[str, Decision]:
            recorded, snapshots = await _load(conn, merchant, order_nos)
            skus = {line.sku for snapshot in snapshots.values() for line in snapshot.lines}
            registered = await _quantities(conn, merchant, skus)
            decisions = decide_orders(mall, order_nos, recorded, snapshots, registered)
            new = {n: d for n, d in decisions.items() if d.code in RECORDED_STATUS}
            await _insert_records(conn, merchant, mall, new, now)
            moves = restock_moves([n for n in order_nos if n in new], new)
            await _move_stock(conn, scope, moves, registered, reason="restock", at=now)
            repeats = sorted(n for n in order_nos if n in recorded)
            if repeats:
                await conn.execute(
                    sa.update(restocks)
                    .where(
                        restocks.c.merchant_id == merchant, _one_of(restocks.c.order_no, repeats)
                    )
                    .values(repeat_requests=restocks.c.repeat_requests + 1)
                )
            for n in repeats:
                decisions[n] = decide_repeat(recorded[n], snapshots.get(n))
            return decisions

        return await self.write(scope, work)

    async def restock_record(self, scope: Scope, order_no: str) -> RestockRecordOut | None:
        async def work(conn: AsyncConnection) -> RestockRecordOut | None:
            records = await _with_lines(conn, scope.merchant, restocks.c.order_no == order_no)
            return records[0] if records else None

        return await self.read(work)

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
        page = sa.select(restocks.c.order_no).where(restocks.c.merchant_id == scope.merchant)
        if status is not None:
            page = page.where(restocks.c.status == status.value)
        if mall is not None:
            page = page.where(restocks.c.mall == mall.value)
        position = sa.tuple_(restocks.c.requested_at, restocks.c.order_no)
        if after is not None:
            mark = sa.tuple_(
                sa.bindparam(None, after[0], type_=UTCDateTime),
                sa.bindparam(None, after[1], type_=sa.String),
            )
            page = page.where(position < mark if newest_first else position > mark)
        order: tuple[sa.ColumnElement[Any], ...] = (restocks.c.requested_at, restocks.c.order_no)
        if newest_first:
            order = (restocks.c.requested_at.desc(), restocks.c.order_no.desc())
        page = page.order_by(*order).limit(limit)

        async def work(conn: AsyncConnection) -> list[RestockRecordOut]:
            which = restocks.c.order_no.in_(page.scalar_subquery())
            return await _with_lines(conn, scope.merchant, which, newest_first=newest_first)

        return await self.read(work)

    async def resolve_restock(
        self, scope: Scope, order_no: str, note: str, resolved_by: str, now: datetime
    ) -> RestockRecordOut | RestockStatus | None:
        record = (restocks.c.merchant_id == scope.merchant) & (restocks.c.order_no == order_no)

        async def work(conn: AsyncConnection) -> RestockRecordOut | RestockStatus | None:
            status = (
                await conn.execute(sa.select(restocks.c.status).where(record))
            ).scalar_one_or_none()
            if status != RestockStatus.FAILED:
                return None if status is None else RestockStatus(status)
            await conn.execute(
                sa.update(restocks)
                .where(record)
                .values(
                    status=RestockStatus.RESOLVED.value,
                    resolution_note=note,
                    resolved_by=resolved_by,
                    resolved_at=now,
                    resolved_actor=scope.actor,
                )
            )
            return (await _with_lines(conn, scope.merchant, restocks.c.order_no == order_no))[0]

        return await self.write(scope, work)

    # --- stock -----------------------------------------------------------------------------

    async def set_stock(self, scope: Scope, sku: str, quantity: int, now: datetime) -> StockOut:
        async def work(conn: AsyncConnection) -> StockOut:
            before = await _quantities(conn, scope.merchant, [sku])
            statement = insert(stock).values(
                merchant_id=scope.merchant,
                sku=sku,
                quantity=quantity,
                created_at=now,
                updated_at=now,
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[stock.c.merchant_id, stock.c.sku],
                    set_={"quantity": quantity, "updated_at": now},
                )
            )
            delta = quantity - before.get(sku, 0)
            await _ledger(conn, scope, sku, delta, quantity, "set", now)
            return StockOut(sku=sku, quantity=quantity, updated_at=now)

        return await self.write(scope, work)

    async def stock(self, scope: Scope, sku: str) -> StockOut | None:
        async def work(conn: AsyncConnection) -> StockOut | None:
            row = (
                await conn.execute(
                    sa.select(stock.c.sku, stock.c.quantity, stock.c.updated_at).where(
                        _sku(scope.merchant, sku)
                    )
                )
            ).first()
            return None if row is None else StockOut.model_validate(row, from_attributes=True)

        return await self.read(work)

    async def delete_stock(self, scope: Scope, sku: str, now: datetime) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            quantity = (
                await conn.execute(
                    sa.delete(stock).where(_sku(scope.merchant, sku)).returning(stock.c.quantity)
                )
            ).scalar_one_or_none()
            if quantity is None:
                return False
            await _ledger(conn, scope, sku, -quantity, 0, "delete", now)
            return True

        return await self.write(scope, work)

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
        async def work(conn: AsyncConnection) -> tuple[StockOut, bool] | None:
            row = (
                await conn.execute(
                    sa.select(stock.c.quantity, stock.c.updated_at).where(_sku(scope.merchant, sku))
                )
            ).first()
            if row is None:
                return None
            if abs(row.quantity + delta) > limit:
                return StockOut(sku=sku, quantity=row.quantity, updated_at=row.updated_at), False
            after = row.quantity + delta
            await conn.execute(
                sa.update(stock)
                .where(_sku(scope.merchant, sku))
                .values(quantity=after, updated_at=now)
            )
            await _ledger(conn, scope, sku, delta, after, "adjustment", now, order_no, note)
            return StockOut(sku=sku, quantity=after, updated_at=now), True

        return await self.write(scope, work)

    async def movements(
        self, scope: Scope, sku: str, after_id: int, limit: int
    ) -> list[MovementOut] | None:
        m = stock_movements
        of_sku = (m.c.merchant_id == scope.merchant) & (m.c.sku == sku)

        async def work(conn: AsyncConnection) -> list[MovementOut] | None:
            rows = (
                await conn.execute(
                    _MOVEMENT.where(of_sku, m.c.id > after_id).order_by(m.c.id).limit(limit)
                )
            ).all()
            if not rows:
                # Registering a sku always writes a ledger row, and ledger rows stay.
                ever = await conn.execute(sa.select(m.c.id).where(of_sku).limit(1))
                if ever.first() is None:
                    return None
            return [MovementOut.model_validate(r, from_attributes=True) for r in rows]

        return await self.read(work)

    async def order_movements(self, scope: Scope, order_no: str) -> list[MovementOut]:
        m, merchant = stock_movements, scope.merchant

        async def work(conn: AsyncConnection) -> list[MovementOut]:
            skus = sa.union(
                sa.select(sync_execution_lines.c.sku).where(
                    sync_execution_lines.c.merchant_id == merchant,
                    sync_execution_lines.c.order_no == order_no,
                ),
                sa.select(restock_lines.c.sku).where(
                    restock_lines.c.merchant_id == merchant, restock_lines.c.order_no == order_no
                ),
            )  # the skus an order moves, as in order_movements.sql
            rows = await conn.execute(
                _MOVEMENT.where(
                    m.c.merchant_id == merchant, m.c.sku.in_(skus), m.c.order_no == order_no
                ).order_by(m.c.id)
            )
            return [MovementOut.model_validate(r, from_attributes=True) for r in rows]

        return await self.read(work)

    async def failure_counts(self, scope: Scope) -> dict[Mall, int]:
        async def work(conn: AsyncConnection) -> dict[Mall, int]:
            rows = await conn.execute(
                sa.select(restocks.c.mall, sa.func.count())
                .where(
                    restocks.c.merchant_id == scope.merchant,
                    restocks.c.status == RestockStatus.FAILED.value,
                )
                .group_by(restocks.c.mall)
            )
            return {Mall(mall): count for mall, count in rows}

        return await self.read(work)

    async def ledger_window(
        self, scope: Scope, after: tuple[int, int], limit: int
    ) -> list[LedgerPosition]:
        # Writers take turns, so ids are already in commit order (every txid is 0).
        m = stock_movements

        async def work(conn: AsyncConnection) -> list[LedgerPosition]:
            rows = await conn.execute(
                sa.select(m.c.txid, m.c.id, m.c.sku, m.c.at)
                .where(
                    m.c.merchant_id == scope.merchant,
                    sa.tuple_(m.c.txid, m.c.id) > sa.tuple_(*after),
                )
                .order_by(m.c.txid, m.c.id)
                .limit(limit)
            )
            return [LedgerPosition(*row) for row in rows]

        return await self.read(work)

    async def quantities(self, scope: Scope, skus: Sequence[str]) -> dict[str, int]:
        return await self.read(lambda conn: _quantities(conn, scope.merchant, skus))

    # --- sync executions -------------------------------------------------------------------

    async def record_sync_executions(
        self, scope: Scope, executions: Sequence[SyncExecutionIn], now: datetime
    ) -> list[SyncDecision]:
        merchant = scope.merchant

        async def work(conn: AsyncConnection) -> list[SyncDecision]:
            order_nos = [e.order_no for e in executions]
            existing = set(
                (
                    await conn.execute(
                        sa.select(sync_executions.c.order_no).where(
                            sync_executions.c.merchant_id == merchant,
                            _one_of(sync_executions.c.order_no, order_nos),
                        )
                    )
                ).scalars()
            )
            skus = {i.sku for e in executions for i in e.items}
            current = await _quantities(conn, merchant, skus)
            decisions = [
                decide_sync(
                    e.order_no,
                    recorded_before=e.order_no in existing,
                    missing_skus=[i.sku for i in e.items if i.sku not in current],
                )
                for e in executions
            ]
            recorded = [
                e for e, d in zip(executions, decisions, strict=True) if d.code is SyncCode.RECORDED
            ]
            if recorded:
                await conn.execute(
                    sa.insert(sync_executions),
                    [
                        {
                            "merchant_id": merchant,
                            "order_no": e.order_no,
                            "mall": e.mall.value,
                            "executed_at": e.executed_at or now,
                            "recorded_at": now,
                        }
                        for e in recorded
                    ],
                )
                await conn.execute(
                    sa.insert(sync_execution_lines),
                    [
                        {
                            "merchant_id": merchant,
                            "order_no": e.order_no,
                            "sku": i.sku,
                            "position": p,
                            "quantity": i.quantity,
                        }
                        for e in recorded
                        for p, i in enumerate(e.items)
                    ],
                )
            moves = [(i.sku, -i.quantity, e.order_no) for e in recorded for i in e.items]
            await _move_stock(conn, scope, moves, current, reason="sync_execution", at=now)
            return decisions

        return await self.write(scope, work)

    async def sync_execution(self, scope: Scope, order_no: str) -> SyncExecutionOut | None:
        e, lines = sync_executions, sync_execution_lines

        async def work(conn: AsyncConnection) -> SyncExecutionOut | None:
            rows = await conn.execute(
                sa.select(
                    e.c.order_no,
                    e.c.mall,
                    e.c.executed_at,
                    e.c.recorded_at,
                    lines.c.sku,
                    lines.c.quantity,
                )
                .join(lines)
                .where(e.c.merchant_id == scope.merchant, e.c.order_no == order_no)
                .order_by(lines.c.position)
            )
            return sync_execution(rows.mappings().all())

        return await self.read(work)

    # --- merchants ---------------------------------------------------------------------

    async def merchant(self, merchant_id: str) -> Merchant | None:
        async def work(conn: AsyncConnection) -> Merchant | None:
            found = sa.select(merchants).where(merchants.c.merchant_id == merchant_id)
            row = (await conn.execute(found)).first()
            return Merchant(*row) if row is not None else None

        return await self.read(work)

    async def merchants(self, after: str | None, limit: int) -> list[Merchant]:
        page = (
            sa.select(merchants)
            .where(merchants.c.merchant_id > (after or ""))
            .order_by(merchants.c.merchant_id)
            .limit(limit)
        )

        async def work(conn: AsyncConnection) -> list[Merchant]:
            return [Merchant(*row) for row in await conn.execute(page)]

        return await self.read(work)

    async def put_merchant(
        self, scope: Scope, merchant_id: str, name: str, now: datetime, *, rename: bool
    ) -> tuple[Merchant, bool]:
        async def work(conn: AsyncConnection) -> tuple[Merchant, bool]:
            found = sa.select(merchants).where(merchants.c.merchant_id == merchant_id)
            row = (await conn.execute(found)).first()
            if row is None:
                await conn.execute(
                    sa.insert(merchants).values(merchant_id=merchant_id, name=name, created_at=now)
                )
                return Merchant(merchant_id, name, now), True
            merchant = Merchant(*row)
            if rename and merchant.name != name:
                await conn.execute(
                    sa.update(merchants)
                    .where(merchants.c.merchant_id == merchant_id)
                    .values(name=name)
                )
                merchant = Merchant(merchant_id, name, merchant.created_at)
            return merchant, False

        return await self.write(scope, work)

    async def failures_by_merchant(
        self, after: str | None, limit: int
    ) -> list[tuple[Merchant, dict[Mall, int]]]:
        failing = (
            sa.select(restocks.c.merchant_id, restocks.c.mall, sa.func.count().label("failures"))
            .where(
                restocks.c.status == RestockStatus.FAILED.value,
                restocks.c.merchant_id > (after or ""),
            )
            .group_by(restocks.c.merchant_id, restocks.c.mall)
            .cte("failing")
        )
        chosen = (
            sa.select(failing.c.merchant_id)
            .distinct()
            .order_by(failing.c.merchant_id)
            .limit(limit)
            .cte("chosen")
        )
        listed = (
            sa.select(
                merchants.c.merchant_id,
                merchants.c.name,
                merchants.c.created_at,
                failing.c.mall,
                failing.c.failures,
            )
            .join_from(chosen, merchants, merchants.c.merchant_id == chosen.c.merchant_id)
            .join(failing, failing.c.merchant_id == chosen.c.merchant_id)
            .order_by(merchants.c.merchant_id, failing.c.mall)
        )

        async def work(conn: AsyncConnection) -> list[tuple[Merchant, dict[Mall, int]]]:
            return failing_merchants((await conn.execute(listed)).mappings().all())

        return await self.read(work)

    # --- keys ----------------------------------------------------------------------------

    async def api_key(self, digest: bytes, now: datetime, noted_before: datetime) -> Caller | None:
        in_use = (api_keys.c.digest == digest) & api_keys.c.revoked_at.is_(None)

        async def work(conn: AsyncConnection) -> Any:
            found = sa.select(api_keys).where(in_use)
            return (await conn.execute(found)).mappings().first()

        row = await self.read(work)
        if row is None:
            return None
        if row["last_used_at"] is None or row["last_used_at"] < noted_before:

            async def note(conn: AsyncConnection) -> None:
                await conn.execute(sa.update(api_keys).where(in_use).values(last_used_at=now))

            await self.write(None, note)
        return Caller(row["name"], Role(row["role"]), row["merchant_id"])

    async def api_keys_exist(self) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            return bool((await conn.execute(sa.select(sa.exists().select_from(api_keys)))).scalar())

        return await self.read(work)

    async def add_api_key(
        self, scope: Scope, merchant_id: str, name: str, role: Role, digest: bytes, now: datetime
    ) -> KeyRecord | None:
        async def work(conn: AsyncConnection) -> KeyRecord | None:
            made = await conn.execute(
                insert(api_keys)
                .values(
                    merchant_id=merchant_id, name=name, role=role, digest=digest, created_at=now
                )
                .on_conflict_do_nothing()
            )
            return KeyRecord(merchant_id, name, role, now, None) if made.rowcount else None

        return await self.write(scope, work)

    async def api_keys(self, merchant_id: str | None) -> list[KeyRecord]:
        listed = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
        if merchant_id is not None:
            listed = listed.where(api_keys.c.merchant_id == merchant_id)
        listed = listed.order_by(api_keys.c.merchant_id, api_keys.c.name)

        async def work(conn: AsyncConnection) -> list[KeyRecord]:
            return [key_record(row) for row in (await conn.execute(listed)).mappings()]

        return await self.read(work)

    async def revoke_api_key(
        self, scope: Scope, merchant_id: str, name: str, now: datetime
    ) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            revoked = await conn.execute(
                sa.update(api_keys)
                .where(
                    (api_keys.c.merchant_id == merchant_id)
                    & (api_keys.c.name == name)
                    & api_keys.c.revoked_at.is_(None)
                )
                .values(revoked_at=now)
            )
            return bool(revoked.rowcount)

        return await self.write(scope, work)

    # --- idempotency keys ------------------------------------------------------------------

    async def key(self, merchant: str, owner: str, key: str) -> KeyRow | None:
        async def work(conn: AsyncConnection) -> KeyRow | None:
            return await _key(conn, merchant, owner, key)

        return await self.read(work)

    async def purge_keys(self, now: datetime, limit: int) -> int:
        k = idempotency_keys

        async def work(conn: AsyncConnection) -> int:
            oldest = (
                sa.select(k.c.merchant_id, k.c.owner, k.c.key)
                .where(k.c.expires_at <= now)
                .order_by(k.c.expires_at)
                .limit(limit)
            )
            removed = await conn.execute(
                sa.delete(k).where(sa.tuple_(k.c.merchant_id, k.c.owner, k.c.key).in_(oldest))
            )
            return int(removed.rowcount)

        return await self.write(None, work)

    # --- console sign-outs -----------------------------------------------------------------

    async def sign_out(self, sid: str, expires_at: datetime) -> None:
        async def work(conn: AsyncConnection) -> None:
            row = {"sid": sid, "expires_at": expires_at}
            await conn.execute(insert(console_sign_outs).values(row).on_conflict_do_nothing())

        await self.write(None, work)

    async def signed_out(self, sid: str) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            found = sa.select(console_sign_outs.c.sid).where(console_sign_outs.c.sid == sid)
            return await conn.scalar(found) is not None

        return await self.read(work)

    async def purge_sign_outs(self, now: datetime, limit: int) -> int:
        s = console_sign_outs

        async def work(conn: AsyncConnection) -> int:
            oldest = sa.select(s.c.sid).where(s.c.expires_at <= now).order_by(s.c.expires_at)
            removed = await conn.execute(sa.delete(s).where(s.c.sid.in_(oldest.limit(limit))))
            return int(removed.rowcount)

        return await self.write(None, work)

    # --- the service -----------------------------------------------------------------------

    async def schema_revision(self) -> str | None:
        async def work(conn: AsyncConnection) -> str | None:
            return await conn.run_sync(current_revision)

        return await self.read(work)

    def watch_pool(self, watch: PoolWatch) -> None:
        """SQLAlchemy's pool events: a connection is open from connect to close, and in use
        from checkout to checkin."""
        pool = self.engine.sync_engine.pool
        sa.event.listen(pool, "connect", lambda *_: watch.open.inc())
        sa.event.listen(pool, "close", lambda *_: watch.open.dec())
        sa.event.listen(pool, "checkout", lambda *_: watch.in_use.inc())
        sa.event.listen(pool, "checkin", lambda *_: watch.in_use.dec())

    async def close(self) -> None:
        await self.engine.dispose()


# --- statements ----------------------------------------------------------------------------


def _sku(merchant: str, sku: str) -> sa.ColumnElement[bool]:
    return (stock.c.merchant_id == merchant) & (stock.c.sku == sku)


async def _key(conn: AsyncConnection, merchant: str, owner: str, key: str) -> KeyRow | None:
    k = idempotency_keys
    row = (
        (
            await conn.execute(
                sa.select(k).where(k.c.merchant_id == merchant, k.c.owner == owner, k.c.key == key)
            )
        )
        .mappings()
        .first()
    )
    return key_row(row) if row is not None else None


async def _take(conn: AsyncConnection, request: Keyed) -> None:
    """Raise KeyHeld unless the request's key is free (``state_of``): the write lock keeps
    it so until the commit."""
    claim = request.claim
    held = await _key(conn, claim.merchant, claim.owner, claim.key)
    if state_of(held, claim.now) is not KeyState.FREE:
        raise idempotency.refuse(request)


async def _keep(conn: AsyncConnection, request: Keyed, result: Any) -> None:
    """Keep the write's ``result`` as the key's receipt, in the write's transaction."""
    claim = request.claim
    k = idempotency_keys
    kept = {
        "fingerprint": claim.fingerprint,
        "created_at": claim.now,
        "expires_at": claim.expires_at,
        "receipt": pickle.dumps(result),
    }
    await conn.execute(
        insert(k)
        .values(merchant_id=claim.merchant, owner=claim.owner, key=claim.key, **kept)
        .on_conflict_do_update(index_elements=[k.c.merchant_id, k.c.owner, k.c.key], set_=kept)
    )


async def _load(
    conn: AsyncConnection, merchant: str, order_nos: Sequence[str]
) -> tuple[dict[str, RestockStatus], dict[str, Snapshot]]:
    """The orders' restock records and sync snapshots."""
    recorded = {
        order_no: RestockStatus(status)
        for order_no, status in await conn.execute(
            sa.select(restocks.c.order_no, restocks.c.status).where(
                restocks.c.merchant_id == merchant, _one_of(restocks.c.order_no, order_nos)
            )
        )
    }
    rows = await conn.execute(
        sa.select(
            sync_executions.c.order_no,
            sync_executions.c.mall,
            sync_execution_lines.c.sku,
            sync_execution_lines.c.quantity,
        )
        .join(sync_execution_lines)
        .where(
            sync_executions.c.merchant_id == merchant,
            _one_of(sync_executions.c.order_no, order_nos),
        )
        .order_by(sync_executions.c.order_no, sync_execution_lines.c.position)
    )
    lines: dict[str, list[Line]] = {}
    malls: dict[str, Mall] = {}
    for order_no, order_mall, sku, quantity in rows:
        malls[order_no] = Mall(order_mall)
        lines.setdefault(order_no, []).append(Line(sku, quantity))
    return recorded, {n: Snapshot(malls[n], tuple(ls)) for n, ls in lines.items()}


async def _insert_records(
    conn: AsyncConnection, merchant: str, mall: Mall, new: dict[str, Decision], now: datetime
) -> None:
    if not new:
        return
    await conn.execute(
        sa.insert(restocks),
        [
            {
                "merchant_id": merchant,
                "order_no": n,
                "mall": mall.value,
                "status": RECORDED_STATUS[d.code].value,
                "code": d.code.value,
                "requested_at": now,
                "completed_at": now,
                "repeat_requests": 0,
            }
            for n, d in sorted(new.items())
        ],
    )
    lines = [
        {
            "merchant_id": merchant,
            "order_no": n,
            "sku": sku,
            "position": i,
            "quantity": q,
            "missing": missing,
        }
        for n, sku, i, q, missing in record_lines(new)
    ]
    if lines:
        await conn.execute(sa.insert(restock_lines), lines)


async def _with_lines(
    conn: AsyncConnection,
    merchant: str,
    which: sa.ColumnElement[bool],
    *,
    newest_first: bool = False,
) -> list[RestockRecordOut]:
    """The merchant's records ``which`` selects, with their lines, in list order, in one
    statement."""
    requested_at, order_no = restocks.c.requested_at, restocks.c.order_no
    order = (requested_at.desc(), order_no.desc()) if newest_first else (requested_at, order_no)
    rows = await conn.execute(
        sa.select(
            restocks,
            restock_lines.c.sku,
            restock_lines.c.quantity,
            restock_lines.c.missing,
        )
        .outerjoin(restock_lines)
        .where(restocks.c.merchant_id == merchant, which)
        .order_by(*order, restock_lines.c.position)
    )
    return restock_records(rows.mappings().all())


async def _quantities(conn: AsyncConnection, merchant: str, skus: Iterable[str]) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(stock.c.sku, stock.c.quantity).where(
            stock.c.merchant_id == merchant, _one_of(stock.c.sku, skus)
        )
    )
    return {sku: quantity for sku, quantity in rows}


async def _last_ledger_id(conn: AsyncConnection, merchant: str) -> int:
    """The id of the merchant's newest ledger row (0 for none): its next rows number on
    from it, under the write lock (SQLite numbers by itself only a lone INTEGER PRIMARY
    KEY)."""
    m = stock_movements
    last = await conn.scalar(sa.select(sa.func.max(m.c.id)).where(m.c.merchant_id == merchant))
    return int(last or 0)


async def _ledger(
    conn: AsyncConnection,
    scope: Scope,
    sku: str,
    delta: int,
    quantity_after: int,
    reason: str,
    at: datetime,
    order_no: str | None = None,
    note: str | None = None,
) -> None:
    await conn.execute(
        sa.insert(stock_movements).values(
            merchant_id=scope.merchant,
            id=await _last_ledger_id(conn, scope.merchant) + 1,
            sku=sku,
            delta=delta,
            quantity_after=quantity_after,
            reason=reason,
            order_no=order_no,
            at=at,
            note=note,
            actor=scope.actor,
        )
    )


async def _move_stock(
    conn: AsyncConnection,
    scope: Scope,
    moves: Sequence[tuple[str, int, str]],
    current: dict[str, int],
    *,
    reason: str,
    at: datetime,
) -> None:
    """Apply ``(sku, delta, order_no)`` moves and write one ledger row each, in order."""
    if not moves:
        return
    merchant = scope.merchant
    after = dict(current)
    ledger = []
    first_id = await _last_ledger_id(conn, merchant) + 1
    for number, (sku, delta, order_no) in enumerate(moves, first_id):
        after[sku] += delta
        ledger.append(
            {
                "merchant_id": merchant,
                "id": number,
                "sku": sku,
                "delta": delta,
                "quantity_after": after[sku],
                "reason": reason,
                "order_no": order_no,
                "at": at,
                "actor": scope.actor,
            }
        )
    await conn.execute(
        sa.update(stock)
        .where(stock.c.merchant_id == merchant, stock.c.sku == sa.bindparam("b_sku"))
        .values(quantity=sa.bindparam("b_quantity"), updated_at=at),
        [{"b_sku": sku, "b_quantity": after[sku]} for sku in sorted({m[0] for m in moves})],
    )
    await conn.execute(sa.insert(stock_movements), ledger)
