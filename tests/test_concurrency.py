"""Exactly once under concurrency: duplicate storms restore an order once, and only once."""

import asyncio
import os
import random
import subprocess
import sys
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.messages import Code
from restock_service.tables import restocks
from tests.helpers import (
    Database,
    count_rows,
    ledger,
    order,
    put_stock,
    quantities,
    rakuten,
    repeat_requests,
    sync,
)
from tests.servers import Server, running_servers

STORM = 60


def _restock_body(*order_nos: str) -> dict[str, object]:
    return {"mall": "rakuten", "restore_stock": True, "orders": [order(n) for n in order_nos]}


async def _seed_one_order(client: AsyncClient) -> str:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    order_no = rakuten(1)
    await sync(client, order_no, {"A": 3, "B": 1})
    return order_no


async def _codes_of(responses: list[httpx.Response]) -> Counter[str]:
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses][:3]
    return Counter(r.json()["results"][0]["code"] for r in responses)


async def test_concurrent_duplicates_in_one_process_restore_once(
    client: AsyncClient, db: Database
) -> None:
    order_no = await _seed_one_order(client)

    responses = await asyncio.gather(
        *(client.post("/restocks", json=_restock_body(order_no)) for _ in range(STORM))
    )

    assert await _codes_of(responses) == {Code.RESTORED: 1, Code.ALREADY_RESTORED: STORM - 1}
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 3, order_no), ("B", 1, order_no)]
    assert await repeat_requests(db, order_no) == STORM - 1


async def test_concurrent_duplicates_through_two_engines_restore_once(
    client: AsyncClient, db: Database, second_app: FastAPI
) -> None:
    order_no = await _seed_one_order(client)
    transport = ASGITransport(app=second_app)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        clients = [client, other]
        responses = await asyncio.gather(
            *(clients[i % 2].post("/restocks", json=_restock_body(order_no)) for i in range(STORM))
        )

    assert await _codes_of(responses) == {Code.RESTORED: 1, Code.ALREADY_RESTORED: STORM - 1}
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 3, order_no), ("B", 1, order_no)]


async def test_overlapping_batches_in_opposite_orders_restore_each_order_once_without_errors(
    client: AsyncClient, db: Database, second_app: FastAPI
) -> None:
    skus = [f"S{i:02d}" for i in range(8)]
    for sku in skus:
        await put_stock(client, sku, 0)
    order_nos = [rakuten(i) for i in range(1, 21)]
    for i, order_no in enumerate(order_nos):
        # Each order shares skus with its neighbours, listed in varying orders.
        await sync(client, order_no, {skus[(i + k * 3) % 8]: k + 1 for k in range(3)})
    await empty_ledger_expectation(db)

    transport = ASGITransport(app=second_app)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        batches = [order_nos, list(reversed(order_nos))] * 6
        responses = await asyncio.gather(
            *(
                (client, other)[i % 2].post("/restocks", json=_restock_body(*batch))
                for i, batch in enumerate(batches)
            )
        )

    assert {r.status_code for r in responses} == {200}
    restored = Counter(
        r["order_no"]
        for resp in responses
        for r in resp.json()["results"]
        if r["code"] == "restored"
    )
    assert restored == Counter(order_nos)  # every order exactly once across all batches
    assert set((await quantities(client, *skus)).values()) == {0}
    assert len(await ledger(db, "restock")) == 3 * len(order_nos)


async def empty_ledger_expectation(db: Database) -> None:
    assert await ledger(db, "restock") == []


async def test_duplicate_storm_across_two_server_processes_restores_once(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, db = pg_client
    order_no = await _seed_one_order(client)

    with running_servers(pg_database_url, 2) as urls:
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(
                *(
                    http.post(f"{urls[i % 2]}/restocks", json=_restock_body(order_no))
                    for i in range(64)
                )
            )

    assert await _codes_of(responses) == {Code.RESTORED: 1, Code.ALREADY_RESTORED: 63}
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await ledger(db, "restock") == [("A", 3, order_no), ("B", 1, order_no)]
    assert await repeat_requests(db, order_no) == 63
    assert await count_rows(db, restocks) == 1


async def test_racing_puts_and_deletes_of_one_sku_never_fail_and_keep_the_books(
    client: AsyncClient, db: Database, second_app: FastAPI
) -> None:
    transport = ASGITransport(app=second_app)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        responses = await asyncio.gather(
            *(
                (client, other)[i % 2].put("/stock/RACE", json={"quantity": i})
                if i % 3
                else (client, other)[i % 2].delete("/stock/RACE")
                for i in range(90)
            )
        )

    assert {r.status_code for r in responses} <= {200, 204, 404}
    final = await quantities(client, "RACE")
    moves = await ledger(db)
    assert (final["RACE"] or 0) == sum(delta for _, delta, _ in moves)


STORMS, CLIENTS, ORDERS, PARTS = 10, 10, 10, 6
STORM_SKUS = [f"D{i}" for i in range(6)]


async def _deadlocks(db: Database) -> int:
    """Deadlocks PostgreSQL has detected in the test database (a backend reports its count at
    the latest when it exits)."""
    async with db.engine.connect() as conn:
        deadlocks: int = await conn.scalar(
            sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
        return deadlocks


async def _backends(db: Database) -> set[int]:
    async with db.engine.connect() as conn:
        pids = await conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return {pid for (pid,) in pids}


async def _until_gone(db: Database, pids: set[int]) -> None:
    """Until the backends beyond ``pids`` have exited, and with it reported their counts."""
    for _ in range(100):
        if await _backends(db) <= pids:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the servers' backends did not exit")


def _storm_batches(rng: random.Random, order_nos: list[str]) -> list[list[str]]:
    """One client's batches: all of the storm's orders, then parts of them that overlap the
    other clients' parts, each in a random order."""
    return [rng.sample(order_nos, len(order_nos))] + [
        rng.sample(order_nos, rng.randint(6, len(order_nos))) for _ in range(PARTS)
    ]


@pytest.mark.processes
async def test_overlapping_duplicate_storms_on_two_processes_wait_for_locks_and_never_deadlock(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    """Ten storms of ten clients on two processes, each client posting the storm's orders
    and overlapping parts of them in random orders: the repeats' records are locked in one
    order, so no statement deadlocks (each would cost deadlock_timeout, and a chain of them
    the deadline: a 503)."""
    client, db = pg_client
    for sku in STORM_SKUS:
        await put_stock(client, sku, 100)
    rng = random.Random(9)
    storms = []
    for s in range(STORMS):
        order_nos = [rakuten(100 * s + n) for n in range(ORDERS)]
        for order_no in order_nos:
            items = {sku: rng.randint(1, 3) for sku in rng.sample(STORM_SKUS, 3)}
            await sync(client, order_no, items)
        storms.append(order_nos)
    deadlocks_before = await _deadlocks(db)
    ours = await _backends(db)

    servers = [Server(pg_database_url).start() for _ in range(2)]
    try:
        async with httpx.AsyncClient(timeout=30) as http:

            async def one_client(c: int, batches: list[list[str]]) -> list[httpx.Response]:
                url = servers[c % 2].url
                return [await http.post(f"{url}/restocks", json=_restock_body(*b)) for b in batches]

            responses: list[httpx.Response] = []
            sent: Counter[str] = Counter()
            for order_nos in storms:
                clients = [_storm_batches(rng, order_nos) for _ in range(CLIENTS)]
                sent.update(n for batches in clients for batch in batches for n in batch)
                answers = await asyncio.gather(*(one_client(c, b) for c, b in enumerate(clients)))
                responses += [r for client_answers in answers for r in client_answers]
    finally:
        for server in servers:
            server.close()
    await _until_gone(db, ours)

    statuses = Counter(r.status_code for r in responses)
    deadlocks = await _deadlocks(db) - deadlocks_before
    assert (statuses, deadlocks) == ({200: len(responses)}, 0), [
        r.text for r in responses if r.status_code != 200
    ][:3]
    codes = Counter(
        (r["order_no"], r["code"]) for resp in responses for r in resp.json()["results"]
    )
    all_orders = [n for order_nos in storms for n in order_nos]
    assert {n: codes[n, Code.RESTORED] for n in all_orders} == dict.fromkeys(all_orders, 1)
    assert {n: codes[n, Code.ALREADY_RESTORED] for n in all_orders} == {
        n: sent[n] - 1 for n in all_orders
    }
    assert await quantities(client, *STORM_SKUS) == dict.fromkeys(STORM_SKUS, 100)
    assert {n: await repeat_requests(db, n) for n in all_orders} == {
        n: sent[n] - 1 for n in all_orders
    }
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "restock_service", "check"],
        env={**os.environ, "RESTOCK_DATABASE_URL": pg_database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
