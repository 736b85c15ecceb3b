"""PostgreSQL's two-statement restock (restock_pg.py) when something changes between them.

LOAD reads without locks and WRITE writes in one statement that checks what LOAD read still
holds. Here another client changes it in the gap, deterministically: the driver is wrapped
so that the change runs right after the first LOAD. WRITE must then write nothing and fail
with a serialization failure, and the rerun must decide on what is true now.
"""

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from restock_service import restock_pg
from restock_service.config import Settings
from restock_service.db import Database
from restock_service.messages import Code, Mall
from restock_service.rules import Decision
from tests.conftest import migrated_pg_database
from tests.helpers import (
    cancel_ok,
    ledger,
    order,
    put_stock,
    quantities,
    rakuten,
    repeat_requests,
    sync,
)

ORDER = rakuten(1)


class Interleaved:
    """The asyncpg driver, with ``between`` run once, right after the first LOAD."""

    def __init__(self, between: Callable[[], Awaitable[Any]]) -> None:
        self.between: Callable[[], Awaitable[Any]] | None = between
        self.loads = 0
        self.errors: list[str] = []

    def wrap(self, driver: Any) -> Any:
        outer = self

        class Driver:
            async def fetch(self, query: str, *args: Any) -> Any:
                try:
                    rows = await driver.fetch(query, *args)
                except Exception as exc:
                    outer.errors.append(getattr(exc, "sqlstate", repr(exc)))
                    raise
                if query is restock_pg.LOAD:
                    outer.loads += 1
                    if outer.between is not None:
                        between, outer.between = outer.between, None
                        await between()
                return rows

        return Driver()


async def _restock(db: Database, interleaved: Interleaved) -> Decision:
    async def work(driver: Any) -> dict[str, Decision]:
        return await restock_pg.apply(
            interleaved.wrap(driver), Mall.RAKUTEN, [ORDER], datetime.now(UTC)
        )

    return (await db.write_driver(work))[ORDER]


@pytest.fixture
async def pg(pg_client: tuple[AsyncClient, Database]) -> tuple[AsyncClient, Database]:
    client, db = pg_client
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await sync(client, ORDER, {"A": 2, "B": 1})  # A 8, B 9
    return client, db


async def test_a_sku_removed_between_read_and_write_is_seen_by_the_rerun(
    pg: tuple[AsyncClient, Database],
) -> None:
    client, db = pg

    async def remove_b() -> None:
        assert (await client.delete("/stock/B")).status_code == 204

    interleaved = Interleaved(remove_b)
    decision = await _restock(db, interleaved)

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert decision.code is Code.PRODUCT_NOT_FOUND
    assert decision.missing_skus == ("B",)
    assert await quantities(client, "A", "B") == {"A": 8, "B": None}
    assert await ledger(db, "restock") == []


async def test_a_sku_registered_between_read_and_write_is_seen_by_the_rerun(
    pg: tuple[AsyncClient, Database],
) -> None:
    client, db = pg
    assert (await client.delete("/stock/B")).status_code == 204

    async def register_b() -> None:
        await put_stock(client, "B", 5)

    interleaved = Interleaved(register_b)
    decision = await _restock(db, interleaved)

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert decision.code is Code.RESTORED
    assert await quantities(client, "A", "B") == {"A": 10, "B": 6}
    assert await ledger(db, "restock") == [("A", 2, ORDER), ("B", 1, ORDER)]


async def test_an_order_recorded_between_read_and_write_is_restored_once_and_counted_a_repeat(
    pg: tuple[AsyncClient, Database],
) -> None:
    client, db = pg

    async def restock_elsewhere() -> None:
        body = await cancel_ok(client, [order(ORDER)])
        assert body["results"][0]["code"] == Code.RESTORED

    interleaved = Interleaved(restock_elsewhere)
    decision = await _restock(db, interleaved)

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert decision.code is Code.ALREADY_RESTORED
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 2, ORDER), ("B", 1, ORDER)]
    assert await repeat_requests(db, ORDER) == 1


async def test_a_batch_rerun_counts_each_repeat_once(
    pg: tuple[AsyncClient, Database],
) -> None:
    """A batch of an order recorded before, a new one, and one recorded in the gap."""
    client, db = pg
    before, new = rakuten(2), rakuten(3)
    await sync(client, before, {"A": 1})
    await sync(client, new, {"B": 1})  # A 7, B 8
    await cancel_ok(client, [order(before)])  # A 8

    async def restock_elsewhere() -> None:
        await cancel_ok(client, [order(ORDER)])  # A 10, B 9

    interleaved = Interleaved(restock_elsewhere)

    async def work(driver: Any) -> dict[str, Decision]:
        return await restock_pg.apply(
            interleaved.wrap(driver), Mall.RAKUTEN, [ORDER, before, new], datetime.now(UTC)
        )

    decisions = await db.write_driver(work)

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert {n: d.code for n, d in decisions.items()} == {
        ORDER: Code.ALREADY_RESTORED,
        before: Code.ALREADY_RESTORED,
        new: Code.RESTORED,
    }
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await repeat_requests(db, ORDER) == 1
    assert await repeat_requests(db, before) == 1
    assert await repeat_requests(db, new) == 0


async def test_nothing_in_between_costs_two_statements_and_no_retry(
    pg: tuple[AsyncClient, Database],
) -> None:
    client, db = pg

    async def nothing() -> None:
        pass

    interleaved = Interleaved(nothing)
    decision = await _restock(db, interleaved)

    assert (interleaved.loads, interleaved.errors) == (1, [])
    assert decision.code is Code.RESTORED
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}


@pytest.fixture
def fresh_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    with migrated_pg_database(pg_admin_dsn) as url:
        yield url


async def test_a_lost_connection_expires_the_idle_ones(pg_database_url: str) -> None:
    """After a failover the pool's idle connections are as dead as the one that failed,
    without their sockets showing it: they are replaced on their next use."""
    db = Database(Settings(database_url=pg_database_url))
    pid = "SELECT pg_backend_pid()"
    try:
        pool = await db.drivers()
        async with pool.acquire() as first, pool.acquire() as second:
            before = {await first.fetchval(pid), await second.fetchval(pid)}

        async def lose_connection(driver: Any) -> None:
            await driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await db.write_driver(lose_connection)

        async with pool.acquire() as first, pool.acquire() as second:
            after = {await first.fetchval(pid), await second.fetchval(pid)}
        assert not before & after  # both reconnected, the idle one too
    finally:
        await db.dispose()


async def test_the_hot_pool_connects_with_the_urls_query(pg_database_url: str) -> None:
    """Query parameters of the URL (ssl here) reach the hot pool as they reach the engine."""
    db = Database(Settings(database_url=f"{pg_database_url}?ssl=disable"))
    try:
        assert await db.read_driver(lambda driver: driver.fetchval("SELECT 1")) == 1
    finally:
        await db.dispose()


async def test_the_hot_statements_seek_by_key_on_a_new_install(
    fresh_pg_url: str,
) -> None:
    """On empty tables a sequential scan is the cheapest plan, and the hot path plans each
    statement once per connection: that plan would still be used as the tables grow."""
    db = Database(Settings(database_url=fresh_pg_url))
    statements = {
        "load": (restock_pg.LOAD, "ARRAY['x']"),
        "write": (
            restock_pg.WRITE,
            ", ".join(["'{}'"] * 3 + ["now()", "'rakuten'"] + ["'{}'"] * 12),
        ),
        "record": (restock_pg.RECORD, "'x'"),
    }
    try:
        pool = await db.drivers()
        async with pool.acquire() as driver:
            for name, (sql, arguments) in statements.items():
                await driver.execute(f"PREPARE {name} AS {sql}")
                lines = [
                    row[0] for row in await driver.fetch(f"EXPLAIN EXECUTE {name}({arguments})")
                ]
                plan = "\n".join(lines)
                assert "Index" in plan, plan
                assert "Seq Scan" not in plan, plan
                # Nor a whole index: each index scan seeks by its condition, on the key.
                scans = [i for i, line in enumerate(lines) if "Index Scan" in line]
                scans += [i for i, line in enumerate(lines) if "Index Only Scan" in line]
                assert all("Index Cond" in lines[i + 1] for i in scans), plan
                assert "requested_at" not in plan, plan
    finally:
        await db.dispose()
