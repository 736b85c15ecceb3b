"""A batch costs a fixed number of statements, whatever its size."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event

from restock_service.messages import Code, SyncCode
from restock_service.store.postgres import PostgresStore
from restock_service.tables import (
    DEFAULT_MERCHANT,
    stock,
    stock_movements,
    sync_execution_lines,
    sync_executions,
)
from tests.helpers import Database, cancel_ok, order, rakuten

SIZES = (1, 100, 1000)


async def _seed(db: Database) -> None:
    now = datetime.now(UTC)
    orders = 2 * sum(SIZES) + 1  # two batches of each size, and one to warm up with
    ours = {"merchant_id": DEFAULT_MERCHANT}

    def numbered(row_id: int) -> dict[str, int]:  # SQLite's ids are the writer's to give
        return {"id": row_id} if db.dialect == "sqlite" else {}

    async with db.engine.begin() as conn:
        await conn.execute(
            sa.insert(stock),
            [
                {"sku": f"S{i}", "quantity": 0, "created_at": now, "updated_at": now, **ours}
                for i in range(50)
            ],
        )
        await conn.execute(
            sa.insert(stock_movements),
            [
                {
                    **numbered(i + 1),
                    "sku": f"S{i}",
                    "delta": 0,
                    "quantity_after": 0,
                    "reason": "set",
                    "at": now,
                    **ours,
                }
                for i in range(50)
            ],
        )
        await conn.execute(
            sa.insert(sync_executions),
            [
                {
                    "order_no": rakuten(n),
                    "mall": "rakuten",
                    "executed_at": now,
                    "recorded_at": now,
                    **ours,
                }
                for n in range(orders)
            ],
        )
        await conn.execute(
            sa.insert(sync_execution_lines),
            [
                {
                    **ours,
                    "order_no": rakuten(n),
                    "sku": f"S{(n + k * 7) % 50}",
                    "position": k,
                    "quantity": 1 + k,
                }
                for n in range(orders)
                for k in range(2)
            ],
        )


async def _count_statements(store: Any) -> Callable[[], int]:
    """Count what reaches the database: cursor executions of the SQLite store's engine, or
    the queries of the PostgreSQL store's asyncpg connections."""
    seen: list[Any] = []

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

    if isinstance(store, PostgresStore):
        pool = LoggingPool(await store.pool())

        async def logging_pool() -> Any:
            return pool

        store.pool = logging_pool
    else:

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def _on_cursor(*_: Any) -> None:
            seen.append(1)

    def taken() -> int:
        count = len(seen)
        seen.clear()
        return count

    return taken


async def test_a_batch_of_1_100_or_1000_orders_costs_the_same_statements(
    client: AsyncClient, db: Database, app: FastAPI
) -> None:
    await _seed(db)
    taken = await _count_statements(app.state.store)
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


def _executions(first: int, size: int, skus: int) -> list[dict[str, Any]]:
    return [
        {
            "order_no": f"503-1234567-{n:07d}",
            "mall": "amazon",
            "items": [
                {"sku": f"S{n % skus}", "quantity": 1},
                {"sku": f"S{(n + 1) % skus}", "quantity": 2},
            ],
        }
        for n in range(first, first + size)
    ]


async def test_a_sync_batch_of_1_100_or_1000_executions_costs_the_same_statements(
    client: AsyncClient, db: Database, app: FastAPI
) -> None:
    await _seed(db)
    taken = await _count_statements(app.state.store)
    await client.post("/sync-executions/batch", json={"executions": _executions(0, 1, 50)})
    counts: dict[int, int] = {}
    first = 1
    for size in SIZES:
        executions = _executions(first, size, 50)
        first += size
        expected = [SyncCode.RECORDED] * size
        if size > 1:  # one execution recorded before, one with a sku that is not registered
            executions[0]["order_no"] = "503-1234567-0000000"
            executions[-1]["items"][0]["sku"] = "NOT-REGISTERED"
            expected[0], expected[-1] = SyncCode.ALREADY_RECORDED, SyncCode.SKU_NOT_REGISTERED
        taken()
        response = await client.post("/sync-executions/batch", json={"executions": executions})
        counts[size] = taken()
        assert response.status_code == 200, response.text
        assert [r["code"] for r in response.json()["results"]] == expected

    assert counts[1] == counts[100] == counts[1000], counts
    assert 0 < counts[1] <= 10
    if db.dialect == "postgresql":  # no BEGIN, no COMMIT
        assert counts[1] == 1
