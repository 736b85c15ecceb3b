"""SIGKILL in the middle of a restock load: every order is whole or untouched, and a replay
restores exactly the rest."""

import asyncio
import os
import random
import subprocess
import sys
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from httpx import AsyncClient

from restock_service.books import check_books
from restock_service.tables import restock_lines, restocks
from tests.helpers import Database, order, put_stock, quantities, rakuten, sync
from tests.servers import Server

pytestmark = pytest.mark.processes

SKUS = [f"SKU-{i:02d}" for i in range(20)]
ORDERS = 240
BATCH = 6
START = 1000


def _lines(i: int) -> dict[str, int]:
    return {SKUS[(i * 7) % 20]: 1 + i % 3, SKUS[(i * 7 + 3) % 20]: 1, SKUS[(i * 7 + 11) % 20]: 2}


def _load() -> list[list[str]]:
    """Every order in a shuffled batch, then every batch again in reverse: duplicates too."""
    order_nos = [rakuten(i) for i in range(ORDERS)]
    random.Random(7).shuffle(order_nos)
    batches = [order_nos[i : i + BATCH] for i in range(0, ORDERS, BATCH)]
    return batches + [list(reversed(b)) for b in reversed(batches)]


async def _send(
    url: str,
    batches: list[list[str]],
    *,
    after: int = 0,
    reached: asyncio.Event | None = None,
    concurrency: int = 8,
) -> list[httpx.Response | BaseException]:
    """Send the batches; set ``reached`` once ``after`` answers have come back."""
    answered = 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(batch: list[str]) -> httpx.Response:
            async with gate:
                response = await http.post(
                    "/restocks",
                    json={
                        "mall": "rakuten",
                        "restore_stock": True,
                        "orders": [order(n) for n in batch],
                    },
                )
                nonlocal answered
                answered += 1
                if reached is not None and answered >= after:
                    reached.set()
                return response

        return await asyncio.gather(*(one(b) for b in batches), return_exceptions=True)


async def _restored(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(restocks.c.order_no).where(restocks.c.status == "restored")
        )
        return {r for (r,) in rows}


async def _assert_whole_or_untouched(client: AsyncClient, db: Database) -> set[str]:
    """The books balance, and stock equals START less the lines of unrestored orders."""
    async with db.engine.connect() as conn:
        report = await check_books(conn)
        lines = await conn.execute(sa.select(sa.func.count()).select_from(restock_lines))
        line_count = lines.scalar_one()
    assert report.problems == ()
    restored = await _restored(db)
    assert line_count == 3 * len(restored)
    expected = Counter({sku: START for sku in SKUS})
    for i in range(ORDERS):
        if rakuten(i) not in restored:
            expected.subtract(_lines(i))
    assert await quantities(client, *SKUS) == dict(expected)
    return restored


async def test_sigkill_mid_load_leaves_each_order_whole_or_untouched_and_replay_finishes_it(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, db = pg_client
    for sku in SKUS:
        await put_stock(client, sku, START)
    for i in range(ORDERS):
        await sync(client, rakuten(i), _lines(i))
    load = _load()

    server = Server(pg_database_url).start()
    try:
        ten_answered = asyncio.Event()
        sending = asyncio.ensure_future(_send(server.url, load, after=10, reached=ten_answered))
        await ten_answered.wait()
        server.kill()
        outcomes = await sending
        assert any(isinstance(o, BaseException) for o in outcomes), "the kill came too late"

        before = await _assert_whole_or_untouched(client, db)
        assert 0 < len(before) < ORDERS

        server.start()
        replay = await _send(server.url, load)
    finally:
        server.close()

    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in replay), [
        (r.status_code, r.text[:200]) if isinstance(r, httpx.Response) else repr(r)
        for r in replay
        if not (isinstance(r, httpx.Response) and r.status_code == 200)
    ][:5]
    codes = Counter(
        result["code"]
        for response in replay
        for result in response.json()["results"]  # type: ignore[union-attr]
    )
    assert codes["restored"] == ORDERS - len(before)
    assert codes["restored"] + codes["already_restored"] == 2 * ORDERS
    after = await _assert_whole_or_untouched(client, db)
    assert len(after) == ORDERS
    assert set((await quantities(client, *SKUS)).values()) == {START}

    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "restock_service", "check"],
        env={**os.environ, "RESTOCK_DATABASE_URL": pg_database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("books balance at 1 merchant:")
