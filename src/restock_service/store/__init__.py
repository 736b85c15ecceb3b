"""Storage: one interface for the services, one adapter per database.

The services (restock.py, stock.py) call a ``Store`` and never see SQL or a dialect. The
app opens one at start-up with ``open_store``: ``SqliteStore`` (SQLAlchemy Core on
aiosqlite, one ``BEGIN IMMEDIATE`` transaction per write) or ``PostgresStore`` (asyncpg,
each write one statement from ``sql/``). The restock rules stay in rules.py: both adapters
read what rules.decide needs, let it decide, and write what it decided. Where a PostgreSQL
statement also checks what the rules decided, tests/test_pg_statements.py holds the two
together; tests/test_backends_agree.py runs both adapters on the same histories.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from restock_service.access import Role
from restock_service.config import Settings
from restock_service.console import SignOuts
from restock_service.idempotency import KeyRow, KeyStore
from restock_service.keys import KeyLookups, KeyRecord
from restock_service.merchants import Merchant
from restock_service.messages import MESSAGE, Code, Mall, RestockStatus
from restock_service.rules import Decision, SyncDecision
from restock_service.schemas import (
    LineOut,
    MovementOut,
    Resolution,
    RestockRecordOut,
    StockOut,
    SyncExecutionIn,
    SyncExecutionOut,
)
from restock_service.scope import Scope


@dataclass(frozen=True, slots=True)
class LedgerPosition:
    """Where a ledger row stands in the change feed's order, and what it changed."""

    txid: int
    id: int
    sku: str
    at: datetime


class Level(Protocol):
    """A figure that goes up and down: a Prometheus gauge, or nothing."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...


class _Uncounted:
    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PoolWatch:
    """Where a store counts its connection pool as it changes: connections open, and in use
    (handed out and not yet given back). Idle is open less in use."""

    open: Level
    in_use: Level


UNWATCHED = PoolWatch(_Uncounted(), _Uncounted())


class Store(KeyStore, KeyLookups, SignOuts, Protocol):
    """What the services need from a database. Each write is one unit: all or nothing.

    Every call on a merchant's data takes the call's ``Scope`` (scope.py): it reads and
    writes that merchant's rows only, and its writes record the scope's actor on each ledger
    row and on a resolution. In a keyed scope a write takes the key in its unit and keeps
    its receipt there, or raises KeyHeld; in a replay it answers from the receipt.
    """

    settings: Settings

    # Restocks
    async def restock(
        self, scope: Scope, mall: Mall, order_nos: Sequence[str], now: datetime
    ) -> dict[str, Decision]:
        """Decide rules 3 to 8 for orders whose mall cancel succeeded; apply each once."""

    async def restock_record(self, scope: Scope, order_no: str) -> RestockRecordOut | None: ...

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
        """Records oldest ``requested_at`` first (or newest first), after the keyset position
        ``after``."""

    async def failure_counts(self, scope: Scope) -> dict[Mall, int]:
        """How many restocks are failed (not resolved), by mall."""

    async def resolve_restock(
        self, scope: Scope, order_no: str, note: str, resolved_by: str, now: datetime
    ) -> RestockRecordOut | RestockStatus | None:
        """The settled record; or, when it was not failed, its status; None when absent."""

    # Stock
    async def set_stock(self, scope: Scope, sku: str, quantity: int, now: datetime) -> StockOut: ...

    async def stock(self, scope: Scope, sku: str) -> StockOut | None: ...

    async def delete_stock(self, scope: Scope, sku: str, now: datetime) -> bool:
        """False when the sku is not registered."""

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
        """The stock after the adjustment and True; the stock as it stands and False when
        the quantity would pass ``limit`` either way; None when the sku is not registered."""

    async def movements(
        self, scope: Scope, sku: str, after_id: int, limit: int
    ) -> list[MovementOut] | None:
        """A page of the sku's ledger; None for a sku that never existed."""

    async def order_movements(self, scope: Scope, order_no: str) -> list[MovementOut]:
        """The ledger rows that name the order, on the skus of its sync execution and its
        restock, oldest first."""

    async def ledger_window(
        self, scope: Scope, after: tuple[int, int], limit: int
    ) -> list[LedgerPosition]:
        """Ledger rows after a feed position that no later commit can precede."""

    async def quantities(self, scope: Scope, skus: Sequence[str]) -> dict[str, int]:
        """The registered skus among ``skus`` with their quantities."""

    # Sync executions
    async def record_sync_executions(
        self, scope: Scope, executions: Sequence[SyncExecutionIn], now: datetime
    ) -> list[SyncDecision]:
        """Record each execution that rules.decide_sync records; decisions in request order."""

    async def sync_execution(self, scope: Scope, order_no: str) -> SyncExecutionOut | None: ...

    # Merchants: no merchant's data (contract v1.3); their writes are the platform's
    async def merchant(self, merchant_id: str) -> Merchant | None: ...

    async def merchants(self, after: str | None, limit: int) -> list[Merchant]:
        """The registered merchants after ``after``, by merchant_id."""

    async def put_merchant(
        self, scope: Scope, merchant_id: str, name: str, now: datetime, *, rename: bool
    ) -> tuple[Merchant, bool]:
        """Register a merchant, or rename a registered one when ``rename``; the merchant,
        and whether it is new."""

    async def failures_by_merchant(
        self, after: str | None, limit: int
    ) -> list[tuple[Merchant, dict[Mall, int]]]:
        """The merchants with failed restocks not resolved, after ``after`` by merchant_id,
        with their counts by mall: the one call across merchants (the platform's console)."""

    # Keys (keys.py; the lookups by digest are KeyLookups'): the platform's, like merchants
    async def add_api_key(
        self, scope: Scope, merchant_id: str, name: str, role: Role, digest: bytes, now: datetime
    ) -> KeyRecord | None:
        """Make a key of ``merchant_id`` (PLATFORM: a platform key) with the digest; None
        when the name is taken there, by a key in use or revoked."""

    async def revoke_api_key(
        self, scope: Scope, merchant_id: str, name: str, now: datetime
    ) -> bool:
        """Revoke the key in use of that name; False when there is none."""

    # The service
    async def schema_revision(self) -> str | None: ...

    def watch_pool(self, watch: PoolWatch) -> None:
        """Count the pool's connections in ``watch`` from now on: before any is opened, as
        it counts changes, not totals."""

    async def close(self) -> None: ...


def open_store(settings: Settings) -> Store:
    """The adapter for ``settings.database_url``."""
    if settings.database_url.startswith("sqlite"):
        from restock_service.store.sqlite import SqliteStore

        return SqliteStore(settings)
    from restock_service.store.postgres import PostgresStore

    return PostgresStore(settings)


# --- rows as the API shows them, shared by the adapters ----------------------------------


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def restock_records(rows: Sequence[Mapping[Any, Any]]) -> list[RestockRecordOut]:
    """Records from rows of a record joined to its lines (one row per line, or one row of
    null line columns), grouped in the order they come."""
    grouped: dict[str, list[Mapping[Any, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["order_no"], []).append(row)
    return [
        _record(lines[0], [r for r in lines if r["sku"] is not None]) for lines in grouped.values()
    ]


def _record(record: Mapping[Any, Any], lines: Sequence[Mapping[Any, Any]]) -> RestockRecordOut:
    code = Code(record["code"])
    resolved_at = record["resolved_at"]
    return RestockRecordOut(
        order_no=record["order_no"],
        mall=record["mall"],
        status=record["status"],
        code=code,
        message=MESSAGE[code],
        items=[LineOut(sku=r["sku"], quantity=r["quantity"]) for r in lines],
        missing_skus=[r["sku"] for r in lines if r["missing"]],
        requested_at=utc(record["requested_at"]),
        completed_at=utc(record["completed_at"]),
        repeat_requests=record["repeat_requests"],
        resolution=Resolution(
            note=record["resolution_note"],
            resolved_by=record["resolved_by"],
            resolved_at=utc(resolved_at),
            actor=record["resolved_actor"],
        )
        if resolved_at is not None
        else None,
    )


def key_row(row: Mapping[Any, Any]) -> KeyRow:
    """A caller's key as stored: its request's fingerprint and its write's receipt."""
    receipt = row["receipt"]
    return KeyRow(
        fingerprint=bytes(row["fingerprint"]),
        created_at=utc(row["created_at"]),
        expires_at=utc(row["expires_at"]),
        receipt=bytes(receipt) if receipt is not None else None,
    )


def failing_merchants(rows: Sequence[Mapping[Any, Any]]) -> list[tuple[Merchant, dict[Mall, int]]]:
    """Merchants and their failure counts by mall, from rows of one merchant and mall each,
    in merchant order."""
    grouped: dict[str, tuple[Merchant, dict[Mall, int]]] = {}
    for row in rows:
        merchant_id = row["merchant_id"]
        if merchant_id not in grouped:
            grouped[merchant_id] = (Merchant(merchant_id, row["name"], utc(row["created_at"])), {})
        grouped[merchant_id][1][Mall(row["mall"])] = row["failures"]
    return list(grouped.values())


def key_record(row: Mapping[Any, Any]) -> KeyRecord:
    last_used_at = row["last_used_at"]
    return KeyRecord(
        merchant_id=row["merchant_id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=utc(row["created_at"]),
        last_used_at=utc(last_used_at) if last_used_at is not None else None,
    )


def sync_execution(rows: Sequence[Mapping[Any, Any]]) -> SyncExecutionOut | None:
    """An execution from rows of it joined to its lines, in line order."""
    if not rows:
        return None
    first = rows[0]
    return SyncExecutionOut(
        order_no=first["order_no"],
        mall=first["mall"],
        items=[LineOut(sku=r["sku"], quantity=r["quantity"]) for r in rows],
        executed_at=utc(first["executed_at"]),
        recorded_at=utc(first["recorded_at"]),
    )
