"""A batch costs a fixed number of statements, whatever its size."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from httpx import AsyncClient
from sqlalchemy import event

from restock_service.db import Database
from restock_service.messages import Code
from restock_service.tables import stock, stock_movements, sync_execution_lines, sync_executions
from tests.helpers import cancel_ok, order, rakuten

SIZES = (1, 100, 1000)


async def _seed(db: Database) -> None:
    now = datetime.now(UTC)
    orders = 2 * sum(SIZES) + 1  # two batches of each size, and one to warm up with
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.insert(stock),
            [
                {"sku": f"S{i}", "quantity": 0, "created_at": now, "updated_at": now}
                for i in range(50)
            ],
        )
        await conn.execute(
            sa.insert(stock_movements),
            [
                {"sku": f"S{i}", "delta": 0, "quantity_after": 0, "reason": "set", "at": now}
                for i in range(50)
            ],
        )
        await conn.execute(
            sa.insert(sync_executions),
            [
                {"order_no": rakuten(n), "mall": "rakuten", "executed_at": now, "recorded_at": now}
                for n in range(orders)
            ],
        )
        await conn.execute(
            sa.insert(sync_execution_lines),
            [
                {
                    "order_no": rakuten(n),
                    "sku": f"S{(n + k * 7) % 50}",
                    "position": k,
                    "quantity": 1 + k,
                }
                for n in range(orders)
                for k in range(2)
            ],
        )


async def _count_statements(db: Database) -> Callable[[], int]:
    """Count what reaches the database: cursor executions through SQLAlchemy, and on
    PostgreSQL the queries of the hot path's asyncpg connections."""
    seen: list[Any] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _on_cursor(*_: Any) -> None:
        seen.append(1)

    def logged(_query: Any) -> None:
        seen.append(1)

    class Logging:
        def __init__(self, acquiring: Any) -> None:
            self.acquiring = acquiring

        async def __aenter__(self) -> Any:
            self.driver = await self.acquiring.__aenter__()
            self.driver.add_query_logger(logged)
            return self.driver

        async def __aexit__(self, *exc: Any) -> Any:
            self.driver.remove_query_logger(logged)
            return await self.acquiring.__aexit__(*exc)

    class LoggingPool:
        def __init__(self, pool: Any) -> None:
            self.pool = pool

        def acquire(self, *args: Any, **kwargs: Any) -> Logging:
            return Logging(self.pool.acquire(*args, **kwargs))

    if db.dialect == "postgresql":
        pool = LoggingPool(await db.drivers())

        async def drivers() -> Any:
            return pool

        db.drivers = drivers  # type: ignore[method-assign]

    def taken() -> int:
        count = len(seen)
        seen.clear()
        return count

    return taken


async def test_a_batch_of_1_100_or_1000_orders_costs_the_same_statements(
    client: AsyncClient, db: Database
) -> None:
    await _seed(db)
    taken = await _count_statements(db)
    # Warm up both paths: a connection's first statements include the driver's one-time
    # type lookups. The warm-up order serves below as one the rules do not restore again.
    repeat = rakuten(2 * sum(SIZES))
    await cancel_ok(client, [order(repeat)])
    await cancel_ok(client, [order(repeat)])
    counts: dict[tuple[str, int], int] = {}
    first = 0
    for size in SIZES:
        for kind in ("restorable", "with a repeat"):
            batch = [order(rakuten(n)) for n in range(first, first + size)]
            first += size
            if kind == "with a repeat":  # in place of the last new order, or beside the one
                batch[max(size - 1, 1) :] = [order(repeat)]
            taken()
            body = await cancel_ok(client, batch)
            counts[kind, size] = taken()
            expected = [Code.RESTORED] * len(batch)
            if kind == "with a repeat":
                expected[-1] = Code.ALREADY_RESTORED
            assert [r["code"] for r in body["results"]] == expected

    for kind in ("restorable", "with a repeat"):
        assert counts[kind, 1] == counts[kind, 100] == counts[kind, 1000], counts
        assert 0 < counts[kind, 1] <= 10
    if db.dialect == "postgresql":  # no BEGIN, no COMMIT
        assert counts["restorable", 1] == 1  # LOAD_OR_RESTORE
        assert counts["with a repeat", 1] == 2  # LOAD_OR_RESTORE, then WRITE
