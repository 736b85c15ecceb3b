"""The console per merchant (contract v1.3): a merchant's session sees its merchant only; a
platform session sees every merchant with open failures and may open any of their pages;
every page names the merchant it shows."""

import json
import re
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.tables import restocks
from tests.conftest import empty_tables
from tests.helpers import Database, csrf_of, rakuten, sign_in

KEYS = json.dumps(
    [
        {"name": "yamada", "key": "a-writer", "role": "writer", "merchant": "shop-a"},
        {"name": "ops", "key": "p-admin", "role": "admin", "merchant": "*"},
        {"name": "legacy", "key": "d-writer", "role": "writer"},
    ]
)
ADMIN = {"Authorization": "Bearer p-admin"}
NAMES = {"shop-a": "ショップA", "shop-b": "ショップB"}


def _client(app: FastAPI) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://test")


async def _failed_restock(api: AsyncClient, merchant_id: str, order_no: str) -> None:
    """A failed restock at the merchant: its sku went before the cancel came."""
    at = {**ADMIN, "Merchant-Id": merchant_id}
    assert (await api.put("/stock/CAP-01", json={"quantity": 5}, headers=at)).status_code == 200
    execution = {
        "order_no": order_no,
        "mall": "rakuten",
        "items": [{"sku": "CAP-01", "quantity": 1}],
    }
    assert (await api.post("/sync-executions", json=execution, headers=at)).status_code == 201
    assert (await api.delete("/stock/CAP-01", headers=at)).status_code == 204
    batch = {"mall": "rakuten", "restore_stock": True, "orders": [
        {"order_no": order_no, "mall_cancel_succeeded": True}
    ]}  # fmt: skip
    answer = await api.post("/restocks", json=batch, headers=at)
    assert answer.json()["results"][0]["code"] == "product_not_found", answer.text


@pytest.fixture
async def platform(database_url: str, db: Database) -> AsyncIterator[FastAPI]:
    """shop-a with one failed restock, shop-b with two, default with none."""
    app = create_app(Settings(database_url=database_url, api_keys=KEYS))
    async with app.router.lifespan_context(app):
        await empty_tables(db)
        async with _client(app) as api:
            for merchant_id, name in NAMES.items():
                put = await api.put(f"/merchants/{merchant_id}", json={"name": name}, headers=ADMIN)
                assert put.status_code == 201
            await _failed_restock(api, "shop-a", rakuten(1))
            await _failed_restock(api, "shop-b", rakuten(2))
            await _failed_restock(api, "shop-b", rakuten(3))
        yield app


def _names(page: str, merchant_id: str) -> bool:
    """Whether the page says it shows ``merchant_id``'s data."""
    shown = re.search(r'<p class="merchant"[^>]*>(.*?)</p>', page, re.S)
    return shown is not None and merchant_id in shown.group(1)


async def test_a_merchants_session_sees_only_its_merchant(platform: FastAPI) -> None:
    async with _client(platform) as browser:
        assert (await sign_in(browser, "a-writer")).status_code == 303
        for url in ("/console", "/console/merchants/shop-a"):
            home = await browser.get(url)
            assert home.status_code == 200
            assert _names(home.text, "shop-a") and "ショップA" in home.text
            assert rakuten(1) in home.text and rakuten(2) not in home.text
        for url in (
            "/console/orders/" + rakuten(1),
            "/console/merchants/shop-a/orders/" + rakuten(1),
            "/console/merchants/shop-a/failures",
            "/console/merchants/shop-a/skus/CAP-01",
        ):
            page = await browser.get(url)
            assert page.status_code == 200, url
            assert _names(page.text, "shop-a"), url
        links = await browser.get("/console/merchants/shop-a/failures")
        assert f'href="/console/merchants/shop-a/orders/{rakuten(1)}"' in links.text
        for url in (
            "/console/orders/" + rakuten(2),  # shop-b's order, on shop-a's URL: absent
            "/console/merchants/shop-b",
            "/console/merchants/shop-b/orders/" + rakuten(2),
            "/console/merchants/default/failures",
            "/console/merchants/shop-z",
        ):
            page = await browser.get(url)
            assert page.status_code == 404, url
            assert rakuten(2) not in page.text and "ショップB" not in page.text


async def test_a_platform_session_sees_every_merchant_with_failures_and_acts_as_platform(
    platform: FastAPI, db: Database
) -> None:
    async with _client(platform) as browser:
        assert (await sign_in(browser, "p-admin")).status_code == 303
        home = await browser.get("/console")
        assert home.status_code == 200
        assert "全店舗" in home.text and "default 店舗の画面" in home.text
        rows = re.findall(
            r'<td data-label="店舗"><span><a href="/console/merchants/([a-z0-9-]+)">', home.text
        )
        assert rows == ["shop-a", "shop-b"]  # default has no open failure
        assert 'href="/console/merchants/shop-b/failures?mall=rakuten">2件' in home.text
        assert (await browser.get("/console/failures")).status_code == 200  # default's
        assert _names((await browser.get("/console/failures")).text, "default")

        url = "/console/merchants/shop-b/orders/" + rakuten(2)
        page = await browser.get(url)
        assert page.status_code == 200 and _names(page.text, "shop-b")
        form_key = re.search(r'name="form_key" value="([^"]+)"', page.text)
        assert form_key is not None
        resolved = await browser.post(
            url,
            data={
                "csrf_token": csrf_of(page),
                "form_key": form_key.group(1),
                "note": "モール側で在庫を確認済み",
                "resolved_by": "運用担当",
            },
        )
        assert resolved.status_code == 303
        assert resolved.headers["location"].startswith(url)
        after = await browser.get("/console")
        assert 'href="/console/merchants/shop-b/failures?mall=rakuten">1件' in after.text
        assert (await browser.get("/console/merchants/shop-z")).status_code == 404
    async with db.engine.connect() as conn:
        settled = (
            await conn.execute(
                sa.select(restocks.c.merchant_id, restocks.c.resolved_actor).where(
                    restocks.c.status == "resolved"
                )
            )
        ).all()
    assert settled == [("shop-b", "platform:ops")]


async def test_a_session_of_a_database_key_ends_when_the_key_is_revoked(
    platform: FastAPI,
) -> None:
    async with _client(platform) as api, _client(platform) as browser:
        made = await api.post(
            "/merchants/shop-b/keys", json={"name": "sato", "role": "reader"}, headers=ADMIN
        )
        assert (await sign_in(browser, made.json()["key"])).status_code == 303
        home = await browser.get("/console")
        assert home.status_code == 200 and _names(home.text, "shop-b")
        assert rakuten(2) in home.text and rakuten(1) not in home.text
        revoked = await api.delete("/merchants/shop-b/keys/sato", headers=ADMIN)
        assert revoked.status_code == 204
        ended = await browser.get("/console")
        assert ended.status_code == 303 and ended.headers["location"] == "/console/login"


async def test_with_no_keys_the_merchant_pages_are_open_and_name_their_merchant(
    client: AsyncClient,
) -> None:
    assert (await client.put("/merchants/shop-a", json={"name": "ショップA"})).status_code == 201
    page = await client.get("/console/merchants/shop-a")
    assert page.status_code == 200 and _names(page.text, "shop-a")
    assert _names((await client.get("/console")).text, "default")
    assert (await client.get("/console/merchants/shop-z")).status_code == 404
