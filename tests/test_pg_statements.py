"""The PostgreSQL store's restock statements (store/sql/) when something changes under them.

restock_load_or_restore reads, and restores in the same statement when every order is
restorable; otherwise restock_write writes what the rules decided, in one statement that
checks that what was read still holds. Here another client changes it in between,
deterministically: the store's connections are wrapped so that the change runs right after
the first restock_load_or_restore. The statement that would write on stale reads must write
nothing and fail with a serialization failure, and the rerun must decide on what is true now.
"""

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from restock_service.config import Settings
from restock_service.messages import Code, Mall
from restock_service.rules import Decision
from restock_service.scope import Scope
from restock_service.store.postgres import PostgresStore
from restock_service.store.statements import statement
from tests.conftest import migrated_pg_database
from tests.helpers import (
    Database,
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
# Never synced: the rules do not restore it, so a batch with it takes both statements.
UNSYNCED = rakuten(99)


class Interleaved:
    """The asyncpg driver, with ``between`` run once, right after the first LOAD_OR_RESTORE."""

    def __init__(self, between: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.between = between
        self.loads = 0
        self.statements = 0
        self.errors: list[str] = []

    def wrap(self, connection: Any) -> Any:
        outer = self
        load = statement("restock_load_or_restore").text

        class Connection:
            def is_closed(self) -> bool:
                return bool(connection.is_closed())

            async def fetch(self, query: str, *args: Any) -> Any:
                outer.statements += 1
                outer.loads += query == load
                try:
                    rows = await connection.fetch(query, *args)
                except Exception as exc:
                    outer.errors.append(getattr(exc, "sqlstate", repr(exc)))
                    raise
                if query == load and outer.between is not None:
                    between, outer.between = outer.between, None
                    await between()
                return rows

        return Connection()


class _Acquiring:
    def __init__(self, acquiring: Any, interleaved: Interleaved) -> None:
        self.acquiring, self.interleaved = acquiring, interleaved

    async def __aenter__(self) -> Any:
        return self.interleaved.wrap(await self.acquiring.__aenter__())

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.acquiring.__aexit__(*exc)


async def _restock(
    db: Database, interleaved: Interleaved, order_nos: tuple[str, ...] = (ORDER,)
) -> dict[str, Decision]:
    """A restock by a store of its own (another process, as it were), its statements seen."""
    store = PostgresStore(db.settings)
    pool = await store.pool()

    class Pool:
        def acquire(self, *args: Any, **kwargs: Any) -> _Acquiring:
            return _Acquiring(pool.acquire(*args, **kwargs), interleaved)

    async def wrapped() -> Any:
        return Pool()

    store.pool = wrapped  # type: ignore[method-assign]
    try:
        return await store.restock(Scope(), Mall.RAKUTEN, order_nos, datetime.now(UTC))
    finally:
        await pool.close()


async def _fetchval(db: Database, sql: str, *args: Any) -> Any:
    connection = await asyncpg.connect(db.settings.database_url.replace("+asyncpg", ""))
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


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
    decision = (await _restock(db, interleaved, (ORDER, UNSYNCED)))[ORDER]

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
    decision = (await _restock(db, interleaved))[ORDER]

    # The rerun finds the order restorable and restores it in its one statement.
    assert (interleaved.loads, interleaved.statements, interleaved.errors) == (2, 3, ["40001"])
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
    decision = (await _restock(db, interleaved, (ORDER, UNSYNCED)))[ORDER]

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert decision.code is Code.ALREADY_RESTORED
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 2, ORDER), ("B", 1, ORDER)]
    assert await repeat_requests(db, ORDER) == 1


async def _while_waiting_for(url: str, sql: str, restocking: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``sql`` in another transaction, start ``restocking``, and commit once it waits for
    that transaction's locks; return what ``restocking`` returned."""
    other = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(sql)
        task = asyncio.create_task(restocking())
        for _ in range(500):
            await other.execute("SELECT pg_stat_clear_snapshot()")  # fresh within a transaction
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the restock never waited for the other transaction"
        await transaction.commit()
        return await task
    finally:
        await other.close()


async def test_an_order_claimed_while_the_one_statement_waits_is_restored_once(
    pg: tuple[AsyncClient, Database], pg_database_url: str
) -> None:
    """Another transaction records the order after LOAD_OR_RESTORE read it as new: the claim
    waits for that transaction, finds the record, and the statement fails as a whole."""
    client, db = pg
    claim = (
        "INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,"
        f" completed_at, repeat_requests) VALUES ('default', '{ORDER}', 'rakuten', 'restored',"
        " 'restored', now(), now(), 0)"
    )
    interleaved = Interleaved()
    decision = (
        await _while_waiting_for(pg_database_url, claim, lambda: _restock(db, interleaved))
    )[ORDER]

    assert (interleaved.loads, interleaved.errors) == (2, ["40001"])
    assert decision.code is Code.ALREADY_RESTORED
    assert await quantities(client, "A", "B") == {"A": 8, "B": 9}
    assert await ledger(db, "restock") == []
    assert await repeat_requests(db, ORDER) == 1


async def test_a_sku_removed_while_the_one_statement_waits_is_not_restored(
    pg: tuple[AsyncClient, Database], pg_database_url: str
) -> None:
    """The one statement read B as registered, then waited for the transaction removing it:
    B is not locked, so nothing is restored, and the rules see B missing."""
    client, db = pg
    remove_b = (
        "DELETE FROM stock WHERE merchant_id = 'default' AND sku = 'B';"
        " INSERT INTO stock_movements"
        " (merchant_id, sku, delta, quantity_after, reason, at, txid)"
        " VALUES ('default', 'B', -9, 0, 'delete', now(), 0)"
    )
    decisions = await _while_waiting_for(
        pg_database_url, remove_b, lambda: _restock(db, Interleaved())
    )

    assert decisions[ORDER].code is Code.PRODUCT_NOT_FOUND
    assert decisions[ORDER].missing_skus == ("B",)
    assert await quantities(client, "A", "B") == {"A": 8, "B": None}
    assert await ledger(db, "restock") == []


async def test_a_sku_changed_while_the_one_statement_waits_is_restored_onto_the_change(
    pg: tuple[AsyncClient, Database], pg_database_url: str
) -> None:
    """The lock is granted on A's newest version: the restore adds to it, in one statement."""
    client, db = pg
    add_to_a = (
        "UPDATE stock SET quantity = quantity + 100 WHERE merchant_id = 'default' AND sku = 'A';"
        " INSERT INTO stock_movements"
        " (merchant_id, sku, delta, quantity_after, reason, at, txid)"
        " VALUES ('default', 'A', 100, 108, 'adjustment', now(), 0)"
    )
    interleaved = Interleaved()
    decisions = await _while_waiting_for(
        pg_database_url, add_to_a, lambda: _restock(db, interleaved)
    )

    assert (interleaved.statements, interleaved.errors) == (1, [])
    assert decisions[ORDER].code is Code.RESTORED
    assert await quantities(client, "A", "B") == {"A": 110, "B": 10}
    assert await ledger(db, "restock") == [("A", 2, ORDER), ("B", 1, ORDER)]
    after = await _fetchval(
        db, "SELECT quantity_after FROM stock_movements WHERE reason = 'restock' AND sku = 'A'"
    )
    assert after == 110


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
    decisions = await _restock(db, interleaved, (ORDER, before, new))

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


async def test_a_restorable_order_costs_one_statement_and_no_retry(
    pg: tuple[AsyncClient, Database],
) -> None:
    client, db = pg
    interleaved = Interleaved()
    decision = (await _restock(db, interleaved))[ORDER]

    assert (interleaved.statements, interleaved.errors) == (1, [])
    assert decision.code is Code.RESTORED
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 2, ORDER), ("B", 1, ORDER)]


RECORDED = (None, "restored", "failed")
SYNCED_FROM = (None, "rakuten", "yahoo")


async def test_the_one_statement_restores_exactly_what_the_rules_restore(
    pg_client: tuple[AsyncClient, Database],
) -> None:
    """Every state of an order, as far as rules 3 to 8 look: LOAD_OR_RESTORE restores it
    alone (one statement) exactly when the rules decide ``restored``."""
    client, db = pg_client
    cases = list(itertools.product(RECORDED, SYNCED_FROM, (True, False)))
    for n, (recorded, synced_from, all_registered) in enumerate(cases):
        order_no, a, b = rakuten(1000 + n), f"A{n}", f"B{n}"
        await put_stock(client, a, 10)
        await put_stock(client, b, 10)
        if synced_from:
            await sync(client, order_no, {a: 2, b: 1}, mall=synced_from)
        if not all_registered:
            assert (await client.delete(f"/stock/{b}")).status_code == 204
        if recorded:
            await _fetchval(
                db,
                "INSERT INTO restocks (merchant_id, order_no, mall, status, code,"
                " requested_at, completed_at, repeat_requests)"
                " VALUES ('default', $1, 'rakuten', $2, $3, now(), now(), 0)",
                order_no,
                recorded,
                "restored" if recorded == "restored" else "product_not_found",
            )
        interleaved = Interleaved()
        decision = (await _restock(db, interleaved, (order_no,)))[order_no]

        case = (recorded, synced_from, all_registered, decision.code, interleaved.statements)
        assert (interleaved.statements == 1) == (decision.code is Code.RESTORED), case
        assert interleaved.errors == [], case
        restorable = (recorded, synced_from, all_registered) == (None, "rakuten", True)
        assert (decision.code is Code.RESTORED) == restorable, case


@pytest.fixture
def fresh_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    with migrated_pg_database(pg_admin_dsn) as url:
        yield url


async def test_a_lost_connection_expires_the_idle_ones(pg_database_url: str) -> None:
    """After a failover the pool's idle connections are as dead as the one that failed,
    without their sockets showing it: they are replaced on their next use."""
    store = PostgresStore(Settings(database_url=pg_database_url))
    pid = "SELECT pg_backend_pid()"
    try:
        pool = await store.pool()
        async with pool.acquire() as first, pool.acquire() as second:
            before = {await first.fetchval(pid), await second.fetchval(pid)}
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            async with pool.acquire() as first:
                try:
                    await first.execute("SELECT pg_terminate_backend(pg_backend_pid())")
                except Exception as exc:
                    await store._expire_if_lost(first, exc)  # what every statement's failure does
                    raise

        async with pool.acquire() as first, pool.acquire() as second:
            after = {await first.fetchval(pid), await second.fetchval(pid)}
        assert not before & after  # both reconnected, the idle one too
    finally:
        await store.close()


async def test_the_pool_connects_with_the_urls_query(pg_database_url: str) -> None:
    """Query parameters of the URL (ssl here) reach the pool."""
    store = PostgresStore(Settings(database_url=f"{pg_database_url}?ssl=disable"))
    try:
        assert await store.schema_revision() is not None
    finally:
        await store.close()


# Literal arguments for EXPLAIN, by parameter name.
_ARGUMENTS = {
    "merchant": "'default'",
    "order_nos": "ARRAY['x']",
    "mall": "'rakuten'",
    "now": "now()",
    "reason": "'restock'",
    "order_no": "'x'",
    "sku": "'x'",
    "skus": "ARRAY['x']",
    "quantity": "1",
    "delta": "1",
    "note": "'n'",
    "after_id": "0",
    "limit": "10",
}


_SOME_ROWS = """
INSERT INTO stock (merchant_id, sku, quantity, created_at, updated_at)
  SELECT 'default', 'S' || g, 10, now(), now() FROM generate_series(1, 50000) g;
INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid)
  SELECT 'default', 'S' || g, 10, 10, 'set', now(), g FROM generate_series(1, 50000) g;
INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)
  SELECT 'default', 'O' || g, 'rakuten', now(), now() FROM generate_series(1, 50000) g;
INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
  SELECT 'default', 'O' || g, 'S' || g, 0, 1 FROM generate_series(1, 50000) g;
INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at, completed_at,
                      repeat_requests)
  SELECT 'default', 'O' || g, 'rakuten', 'restored', 'restored', now(), now(), 0
  FROM generate_series(1, 50000) g;
INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT 'default', 'O' || g, 'S' || g, 0, 1, false FROM generate_series(1, 50000) g;
ANALYZE;
"""


async def test_the_busy_statements_seek_by_key(fresh_pg_url: str) -> None:
    """A statement prepared once per connection may run on its generic plan: on tables of
    some size, the busy ones must seek by key, whatever their arguments."""
    busy = (
        "restock_load_or_restore",
        "restock_write",
        "restock_record",
        "stock_get",
        "sync_record",
        "sync_execution",
        "stock_adjust",
    )
    connection = await asyncpg.connect(fresh_pg_url.replace("+asyncpg", ""))
    try:
        await connection.execute(_SOME_ROWS)
        for name in busy:
            query = statement(name)
            arguments = ", ".join(
                _ARGUMENTS.get(n, "'{}'" if n.endswith("s") else "NULL") for n in query.names
            )
            await connection.execute(f"PREPARE {name} AS {query.text}")
            await connection.execute("SET plan_cache_mode = force_generic_plan")
            lines = [
                row[0] for row in await connection.fetch(f"EXPLAIN EXECUTE {name}({arguments})")
            ]
            plan = "\n".join(lines)
            assert "Seq Scan on" not in plan.replace('Seq Scan on "*VALUES*"', ""), plan
            # Nor a whole index: each index scan seeks by its condition, on the key.
            scans = [i for i, line in enumerate(lines) if "Index Scan" in line]
            scans += [i for i, line in enumerate(lines) if "Index Only Scan" in line]
            assert all("Index Cond" in lines[i + 1] for i in scans), plan
            assert "requested_at" not in plan, plan
    finally:
        await connection.close()


async def test_the_migrated_database_plans_each_statement_once_per_connection(
    pg_database_url: str,
) -> None:
    """Migration 0004 sets it on the database, not on the service's connections."""
    store = PostgresStore(Settings(database_url=pg_database_url))
    try:
        pool = await store.pool()
        async with pool.acquire() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert (
                await connection.fetchval(
                    "SELECT count(*) FROM pg_settings WHERE source = 'session'"
                )
                == 0
            )
    finally:
        await store.close()


async def test_a_page_of_the_restock_list_is_one_range_of_its_index(fresh_pg_url: str) -> None:
    """Under a generic plan too, a page after a cursor seeks to the cursor: no page reads the
    list from its start."""
    connection = await asyncpg.connect(fresh_pg_url.replace("+asyncpg", ""))
    try:
        await connection.execute(_SOME_ROWS)
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        query = statement("restock_records")
        arguments = {
            "merchant": "'default'",
            "status": "NULL",
            "mall": "NULL",
            "after_at": "now()",
            "after_order_no": "'O1'",
            "limit": "101",
        }
        await connection.execute(f"PREPARE page AS {query.text}")
        lines = [
            row[0]
            for row in await connection.fetch(
                f"EXPLAIN EXECUTE page({', '.join(arguments[n] for n in query.names)})"
            )
        ]
        plan = "\n".join(lines)
        assert "ix_restocks_requested_at_order_no" in plan, plan
        scan = next(i for i, line in enumerate(lines) if "ix_restocks_requested_at" in line)
        assert "Index Cond" in lines[scan + 1] and "requested_at" in lines[scan + 1], plan
    finally:
        await connection.close()
