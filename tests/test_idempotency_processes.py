"""Idempotency keys across real server processes on PostgreSQL: in flight on another
process, duplicate storms, and SIGKILL in the middle of a keyed load."""

import asyncio
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from httpx import AsyncClient

from restock_service.books import check_books
from restock_service.tables import idempotency_keys, stock_movements
from tests.helpers import Database, put_stock, quantities, quantity
from tests.servers import Server, running_servers

pytestmark = pytest.mark.processes

REPLAYED = "Idempotent-Replayed"
BODY = {"delta": 5, "reason": "棚卸し"}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def _wait_for_key_lock(db: Database) -> None:
    """Until a keyed statement holds its key's advisory lock (it is in its write)."""
    for _ in range(200):
        async with db.engine.connect() as conn:
            held = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            )
        if held:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the first request never took its key's lock")


async def test_a_key_in_flight_on_one_process_is_409_on_another_then_replays(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, db = pg_client
    await put_stock(client, "A", 10)
    with running_servers(pg_database_url, 2) as (one, two):
        async with db.engine.connect() as blocker, httpx.AsyncClient(timeout=30) as http:
            held = await blocker.begin()  # holds the sku's row: the first request waits on it
            await blocker.execute(sa.text("SELECT 1 FROM stock WHERE sku = 'A' FOR UPDATE"))
            first = asyncio.ensure_future(
                http.post(f"{one}/stock/A/adjustments", json=BODY, headers=keyed("k"))
            )
            await _wait_for_key_lock(db)
            during = await http.post(f"{two}/stock/A/adjustments", json=BODY, headers=keyed("k"))
            await held.rollback()
            answered = await first
            after = await http.post(f"{two}/stock/A/adjustments", json=BODY, headers=keyed("k"))

    assert during.status_code == 409, during.text
    assert during.headers["retry-after"] == "1"
    assert answered.status_code == 200, answered.text
    assert REPLAYED not in answered.headers
    assert (after.headers[REPLAYED], after.content) == ("true", answered.content)
    assert await quantity(client, "A") == 15


async def test_a_keyed_storm_on_two_processes_moves_stock_once(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, _db = pg_client
    await put_stock(client, "A", 10)
    with running_servers(pg_database_url, 2) as urls:
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(
                *(
                    http.post(f"{urls[i % 2]}/stock/A/adjustments", json=BODY, headers=keyed("s"))
                    for i in range(40)
                )
            )

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, [r.text for r in responses][:3]
    firsts = [r for r in responses if r.status_code == 200 and REPLAYED not in r.headers]
    assert len(firsts) == 1
    assert all(r.content == firsts[0].content for r in responses if REPLAYED in r.headers)
    assert await quantity(client, "A") == 15


SKUS = [f"K{i}" for i in range(10)]
START = 1000
LOAD = 300


def _adjustment(i: int) -> tuple[str, dict[str, object]]:
    return SKUS[i % 10], {"delta": 1 + i % 3, "reason": f"load-{i}"}


async def _send_load(
    url: str, *, reached: asyncio.Event | None = None, after: int = 0
) -> dict[int, httpx.Response | BaseException]:
    gate = asyncio.Semaphore(8)
    answered = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(i: int) -> httpx.Response:
            nonlocal answered
            sku, body = _adjustment(i)
            async with gate:
                response = await http.post(
                    f"/stock/{sku}/adjustments", json=body, headers=keyed(f"load-{i}")
                )
            answered += 1
            if reached is not None and answered >= after:
                reached.set()
            return response

        outcomes = await asyncio.gather(*(one(i) for i in range(LOAD)), return_exceptions=True)
    return dict(enumerate(outcomes))


async def _answered_and_applied(db: Database) -> tuple[set[str], Counter[str]]:
    """The keys with a receipt, and how often each load adjustment is in the ledger."""
    async with db.engine.connect() as conn:
        stored = await conn.execute(
            sa.select(idempotency_keys.c.key).where(idempotency_keys.c.receipt.is_not(None))
        )
        notes = await conn.execute(
            sa.select(stock_movements.c.note).where(stock_movements.c.reason == "adjustment")
        )
        return {k for (k,) in stored}, Counter(n for (n,) in notes)


async def test_sigkill_mid_keyed_load_every_key_replays_its_effect_or_runs_once(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, db = pg_client
    for sku in SKUS:
        await put_stock(client, sku, START)

    server = Server(pg_database_url, RESTOCK_IDEMPOTENCY_LOCK_S="2").start()
    try:
        twenty = asyncio.Event()
        sending = asyncio.ensure_future(_send_load(server.url, reached=twenty, after=20))
        await twenty.wait()
        server.kill()
        first = await sending
        assert any(isinstance(o, BaseException) for o in first.values()), "killed too late"

        # A receipt exists exactly when its effect committed.
        stored, applied = await _answered_and_applied(db)
        assert stored == set(applied)
        assert set(applied.values()) == {1}
        assert 0 < len(stored) < LOAD

        server.start()
        again = await _send_load(server.url)
        in_flight = [
            i for i, r in again.items() if isinstance(r, httpx.Response) and r.status_code == 409
        ]
        await asyncio.sleep(2.2)  # the dead process's claims lapse
        retried = await _send_load(server.url)
    finally:
        server.close()

    for i, response in again.items():
        assert isinstance(response, httpx.Response), repr(response)
        assert response.status_code in (200, 409), response.text
        replayed = response.headers.get(REPLAYED) == "true"
        assert replayed == (f"load-{i}" in stored), i
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in retried.values()), (
        in_flight
    )
    stored_after, applied_after = await _answered_and_applied(db)
    assert applied_after == Counter({f"load-{i}": 1 for i in range(LOAD)})
    assert stored_after == {f"load-{i}" for i in range(LOAD)}
    expected = Counter({sku: START for sku in SKUS})
    for i in range(LOAD):
        sku, body = _adjustment(i)
        expected[sku] += int(body["delta"])  # type: ignore[call-overload]
    assert await quantities(client, *SKUS) == dict(expected)
    async with db.engine.connect() as conn:
        assert (await check_books(conn)).problems == ()
