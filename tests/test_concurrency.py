"""Exactly once under concurrency: duplicate storms restore an order once, and only once."""

import asyncio
from collections import Counter

import httpx
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
from tests.servers import running_servers

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
