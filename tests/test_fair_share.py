"""Fair share (contract v1.3): one merchant cannot take the service from the others."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.fair_share import FairShare, TooManyAtOnce
from tests.conftest import empty_tables
from tests.helpers import Database, put_stock, quantity

SHOP_A = {"Merchant-Id": "shop-a"}
SHOP_B = {"Merchant-Id": "shop-b"}


async def test_a_merchant_past_its_places_waits_for_one_then_is_refused() -> None:
    share = FairShare(places=2, queue_s=0.2)
    await share.enter("a")
    await share.enter("a")
    await share.enter("b")  # another merchant's places are its own

    waiting = asyncio.create_task(share.enter("a"))
    await asyncio.sleep(0.05)
    share.leave("a")  # a place frees within the wait: the waiter takes it
    await waiting
    with pytest.raises(TooManyAtOnce):
        await share.enter("a")  # none frees within 0.2 s
    for merchant in ("a", "a", "b"):
        share.leave(merchant)
    assert share._merchants == {}  # a merchant with nothing under way is forgotten


@pytest.fixture
async def shared(database_url: str, db: Database) -> AsyncIterator[AsyncClient]:
    """An open deployment with shop-a and shop-b, and 2 places per merchant."""
    settings = Settings(database_url=database_url, merchant_max_inflight=2, merchant_queue_s=0.3)
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        await empty_tables(db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            for merchant_id in ("shop-a", "shop-b"):
                await client.put(f"/merchants/{merchant_id}", json={"name": merchant_id})
            yield client


async def test_a_burst_of_one_merchant_is_served_whole(shared: AsyncClient) -> None:
    await put_stock(shared, "A", 0)  # default's
    shared.headers.update(SHOP_A)
    await put_stock(shared, "A", 0)
    adjust = {"delta": 1, "reason": "burst"}

    answers = await asyncio.gather(
        *(shared.post("/stock/A/adjustments", json=adjust) for _ in range(40))
    )

    assert [a.status_code for a in answers] == [200] * 40
    assert await quantity(shared, "A") == 40


async def test_a_flood_of_one_merchant_leaves_the_other_unhurt(
    shared: AsyncClient, db: Database
) -> None:
    """shop-a's writes of sku A hang on a row lock held elsewhere: its 2 places fill, its
    next requests are refused after the 0.3 s queue, and shop-b is served all the while."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite has one writer for every merchant: its queue is the write lock")
    for shop in (SHOP_A, SHOP_B):
        shared.headers.update(shop)
        await put_stock(shared, "A", 1)
    holder = await asyncpg.connect(db.settings.database_url.replace("+asyncpg", ""))
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute(
            "SELECT 1 FROM stock WHERE merchant_id = 'shop-a' AND sku = 'A' FOR UPDATE"
        )
        stuck = [
            asyncio.create_task(shared.put("/stock/A", json={"quantity": 9}, headers=SHOP_A))
            for _ in range(2)
        ]
        await asyncio.sleep(0.1)
        refused = await shared.put("/stock/A", json={"quantity": 9}, headers=SHOP_A)
        served = await asyncio.gather(
            *(shared.put("/stock/A", json={"quantity": 7}, headers=SHOP_B) for _ in range(10))
        )
        await lock.rollback()
        finished = await asyncio.gather(*stuck)
    finally:
        await holder.close()

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "nothing was done" in refused.json()["detail"]
    assert [a.status_code for a in served] == [200] * 10
    assert [a.status_code for a in finished] == [200, 200]
    shared.headers.update(SHOP_A)
    assert await quantity(shared, "A") == 9


async def test_the_services_own_paths_are_never_limited(shared: AsyncClient) -> None:
    share_of_none = [shared.get(path) for path in ("/health", "/ready", "/metrics") * 5]
    assert {a.status_code for a in await asyncio.gather(*share_of_none)} == {200}
