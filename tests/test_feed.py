"""The stock-change feed misses nothing, even when writes commit out of order."""

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service.tables import stock, stock_movements
from tests.helpers import Database, own_ledger_row, put_stock, quantities

SKUS = [f"F{i}" for i in range(8)]


async def _follow(client: AsyncClient, seen: dict[str, int | None], cursor: str | None) -> str:
    """Read every page after ``cursor``; remember each sku's latest reported quantity."""
    while True:
        params = {"limit": 3, **({"after": cursor} if cursor else {})}
        page = (await client.get("/stock-changes", params=params)).json()
        for item in page["items"]:
            seen[item["sku"]] = None if item["deleted"] else item["quantity"]
        if page["next_cursor"] == cursor:
            return cursor or ""
        cursor = page["next_cursor"]


async def test_a_change_that_commits_after_later_ones_is_still_delivered(
    client: AsyncClient, db: Database
) -> None:
    for sku in SKUS:
        await put_stock(client, sku, 100)
    seen: dict[str, int | None] = {}
    cursor = await _follow(client, seen, None)
    slow_holds_its_rows = asyncio.Event()
    release_slow = asyncio.Event()

    async def slow(conn: AsyncConnection) -> None:
        # Takes its ledger id first, then commits only after the others have.
        after = (
            await conn.execute(
                sa.update(stock)
                .where(stock.c.sku == "F0")
                .values(quantity=stock.c.quantity + 7)
                .returning(stock.c.quantity)
            )
        ).scalar_one()
        txid = (
            sa.cast(sa.cast(sa.func.pg_current_xact_id(), sa.Text), sa.BigInteger)
            if conn.dialect.name == "postgresql"
            else 0
        )
        await conn.execute(
            sa.insert(stock_movements).values(
                **own_ledger_row(conn.dialect.name),
                sku="F0",
                delta=7,
                quantity_after=after,
                reason="adjustment",
                at=datetime.now(UTC),
                txid=txid,
            )
        )
        slow_holds_its_rows.set()
        await release_slow.wait()

    async def fast_writers() -> None:
        await slow_holds_its_rows.wait()
        for round_ in range(3):
            await asyncio.gather(
                *(
                    client.post(
                        f"/stock/{sku}/adjustments", json={"delta": round_ + 1, "reason": "count"}
                    )
                    for sku in SKUS[1:]
                )
            )

    async def reader() -> None:
        nonlocal cursor
        await slow_holds_its_rows.wait()
        for _ in range(10):  # follow the feed while the slow writer is still open
            cursor = await _follow(client, seen, cursor)
            await asyncio.sleep(0.01)
        release_slow.set()

    writing = asyncio.ensure_future(db.write(slow))
    if db.dialect == "sqlite":
        # One writer at a time: the fast writers wait for the slow one, the reader doesn't.
        await asyncio.gather(reader(), fast_writers())
    else:
        await asyncio.gather(fast_writers(), reader())
    await writing
    await _follow(client, seen, cursor)

    final = await quantities(client, *SKUS)
    assert final["F0"] == 107
    assert seen == final  # every sku's last reported quantity is its real one


async def test_concurrent_writers_and_a_reader_following_cursors_miss_no_change(
    client: AsyncClient, db: Database
) -> None:
    for sku in SKUS:
        await put_stock(client, sku, 0)
    seen: dict[str, int | None] = {}
    cursor = await _follow(client, seen, None)
    done = asyncio.Event()

    async def writer(offset: int) -> None:
        for i in range(12):
            sku = SKUS[(i * 3 + offset) % len(SKUS)]
            if i % 5 == 4:
                await client.put(f"/stock/{sku}", json={"quantity": i})
            else:
                await client.post(
                    f"/stock/{sku}/adjustments", json={"delta": offset + 1, "reason": "r"}
                )

    async def reader() -> None:
        nonlocal cursor
        while not done.is_set():
            cursor = await _follow(client, seen, cursor)
            await asyncio.sleep(0)

    reading = asyncio.ensure_future(reader())
    await asyncio.gather(*(writer(k) for k in range(4)))
    done.set()
    await reading
    await _follow(client, seen, cursor)

    assert seen == await quantities(client, *SKUS)
