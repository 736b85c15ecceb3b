"""Merchants (contract v1.3): registering them, and which merchant a request is for.

Each merchant's data is its own: the same sku and order number at two merchants are two
skus and two orders, and another merchant's record is answered exactly as an absent one.
"""

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.messages import Code
from tests.conftest import empty_tables
from tests.helpers import Database, cancel_ok, order, put_stock, quantity, rakuten, sync

SHOP_A = {"Merchant-Id": "shop-a"}
SHOP_B = {"Merchant-Id": "shop-b"}
KEYS = json.dumps(
    [
        {"name": "a-writer", "key": "key-of-a-writer", "role": "writer", "merchant": "shop-a"},
        {"name": "a-reader", "key": "key-of-a-reader", "role": "reader", "merchant": "shop-a"},
        {"name": "ops", "key": "key-of-ops", "role": "writer", "merchant": "*"},
        {"name": "admin", "key": "key-of-admin", "role": "admin", "merchant": "*"},
        {"name": "legacy", "key": "key-of-legacy", "role": "writer"},
    ]
)


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def assert_problem(response: Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        assert [e["field"] for e in response.json()["errors"]] == [field]


async def _register(client: AsyncClient, merchant_id: str, **headers: str) -> None:
    response = await client.put(
        f"/merchants/{merchant_id}", json={"name": merchant_id}, headers=headers
    )
    assert response.status_code in (200, 201), response.text


@pytest.fixture
async def shops(client: AsyncClient) -> AsyncClient:
    """The open deployment's client, with shop-a and shop-b registered."""
    for merchant_id in ("shop-a", "shop-b"):
        await _register(client, merchant_id)
    return client


async def test_a_merchant_is_registered_once_renamed_and_listed_in_pages(
    client: AsyncClient,
) -> None:
    first = await client.put("/merchants/shop-a", json={"name": "ショップA"})
    again = await client.put("/merchants/shop-a", json={"name": "ショップA（本店）"})
    await _register(client, "shop-b")

    assert first.status_code == 201
    assert first.json()["merchant_id"] == "shop-a" and first.json()["name"] == "ショップA"
    assert again.status_code == 200
    assert again.json()["name"] == "ショップA（本店）"
    assert again.json()["created_at"] == first.json()["created_at"]
    assert (await client.get("/merchants/shop-a")).json() == again.json()
    assert_problem(await client.get("/merchants/shop-z"), 404)
    page = (await client.get("/merchants", params={"limit": 2})).json()
    assert [m["merchant_id"] for m in page["items"]] == ["default", "shop-a"]
    rest = (await client.get("/merchants", params={"cursor": page["next_cursor"]})).json()
    assert [m["merchant_id"] for m in rest["items"]] == ["shop-b"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("merchant_id", "body"),
    [("Shop-A", {"name": "x"}), ("-a", {"name": "x"}), ("a" * 33, {"name": "x"}),
     ("shop-a", {"name": ""}), ("shop-a", {"name": "x" * 101}), ("shop-a", {})],
)  # fmt: skip
async def test_a_bad_merchant_id_or_name_is_422_naming_it_and_registers_nothing(
    client: AsyncClient, merchant_id: str, body: dict[str, str]
) -> None:
    response = await client.put(f"/merchants/{merchant_id}", json=body)

    assert_problem(response, 422)
    assert [m["merchant_id"] for m in (await client.get("/merchants")).json()["items"]] == [
        "default"
    ]


async def test_the_same_sku_and_order_at_two_merchants_are_two_skus_and_two_orders(
    shops: AsyncClient,
) -> None:
    for shop, stock in ((SHOP_A, 10), (SHOP_B, 20)):
        shops.headers.update(shop)
        await put_stock(shops, "CAP-01", stock)
        await sync(shops, rakuten(1), {"CAP-01": 2})
    for shop in (SHOP_A, SHOP_B, SHOP_A):
        shops.headers.update(shop)
        await cancel_ok(shops, [order(rakuten(1))])

    shops.headers.update(SHOP_A)
    assert await quantity(shops, "CAP-01") == 10
    shops.headers.update(SHOP_B)
    assert await quantity(shops, "CAP-01") == 20
    del shops.headers["Merchant-Id"]  # default's: it has neither
    assert await quantity(shops, "CAP-01") is None
    assert (await shops.get(f"/restocks/{rakuten(1)}")).status_code == 404


async def test_another_merchants_record_is_answered_exactly_as_an_absent_one(
    shops: AsyncClient,
) -> None:
    shops.headers.update(SHOP_A)
    await put_stock(shops, "CAP-01", 10)
    await sync(shops, rakuten(1), {"CAP-01": 2})
    await cancel_ok(shops, [order(rakuten(1))])
    shops.headers.update(SHOP_B)
    paths = ["/stock/CAP-01", f"/restocks/{rakuten(1)}", f"/sync-executions/{rakuten(1)}",
             "/stock/CAP-01/movements"]  # fmt: skip
    for path in paths:
        theirs = await shops.get(path)
        absent = await shops.get(path.replace("CAP-01", "NONE-1").replace(rakuten(1), rakuten(9)))
        assert theirs.status_code == absent.status_code == 404, path
        assert theirs.json()["title"] == absent.json()["title"], path
    # writes: shop-b's cancel of shop-a's order is an order shop-b never synced
    (result,) = (await cancel_ok(shops, [order(rakuten(1))]))["results"]
    assert result["code"] == Code.NO_SYNC_HISTORY
    adjusted = await shops.post("/stock/CAP-01/adjustments", json={"delta": 1, "reason": "x"})
    assert adjusted.status_code == 404
    shops.headers.update(SHOP_A)
    assert await quantity(shops, "CAP-01") == 10
    assert (await shops.get("/stock-changes")).json()["items"][0]["sku"] == "CAP-01"
    shops.headers.update(SHOP_B)
    assert (await shops.get("/stock-changes")).json()["items"] == []


async def test_an_idempotency_key_is_the_callers_at_its_merchant(shops: AsyncClient) -> None:
    for shop in (SHOP_A, SHOP_B):
        shops.headers.update(shop)
        await put_stock(shops, "A", 10)
    adjust = {"delta": 5, "reason": "x"}
    answers = []
    for shop in (SHOP_A, SHOP_B, SHOP_A):
        headers = {**shop, "Idempotency-Key": "same-key"}
        answers.append(await shops.post("/stock/A/adjustments", json=adjust, headers=headers))

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers.get("idempotent-replayed") for a in answers] == [None, None, "true"]
    for shop in (SHOP_A, SHOP_B):
        shops.headers.update(shop)
        assert await quantity(shops, "A") == 15


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Merchant-Id": "shop-z"}, 404), ({"Merchant-Id": "Shop-A"}, 400),
     ({"Merchant-Id": "*"}, 400), ({"Merchant-Id": ""}, 400)],
)  # fmt: skip
async def test_without_keys_a_merchant_id_must_name_a_registered_merchant(
    shops: AsyncClient, db: Database, headers: dict[str, str], status: int
) -> None:
    response = await shops.put("/stock/A", json={"quantity": 1}, headers=headers)

    assert_problem(response, status, "Merchant-Id" if status == 400 else None)
    async with db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM stock"))).scalar_one() == 0


async def test_two_merchant_id_headers_are_400_naming_the_header(shops: AsyncClient) -> None:
    response = await shops.put(
        "/stock/A",
        json={"quantity": 1},
        headers=[("Merchant-Id", "shop-a"), ("Merchant-Id", "shop-b")],
    )
    assert_problem(response, 400, "Merchant-Id")


# --- with keys ------------------------------------------------------------------------------


@pytest.fixture
async def keyed(database_url: str, db: Database) -> AsyncIterator[AsyncClient]:
    """A deployment with keys of shop-a, of the platform, and one of v1.2 (default's)."""
    app: FastAPI = create_app(Settings(database_url=database_url, api_keys=KEYS))
    async with app.router.lifespan_context(app):
        await empty_tables(db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            for merchant_id in ("shop-a", "shop-b"):
                await _register(client, merchant_id, **bearer("key-of-admin"))
            yield client


async def test_a_merchant_key_is_its_merchants_and_may_name_only_it(keyed: AsyncClient) -> None:
    a = bearer("key-of-a-writer")
    assert (await keyed.put("/stock/A", json={"quantity": 3}, headers=a)).status_code == 200
    own = await keyed.get("/stock/A", headers={**a, **SHOP_A})
    other = await keyed.put("/stock/A", json={"quantity": 9}, headers={**a, **SHOP_B})
    ops = bearer("key-of-ops", **SHOP_A)

    assert own.json()["quantity"] == 3
    assert_problem(other, 403)
    assert (await keyed.get("/stock/A", headers=ops)).json()["quantity"] == 3
    assert (await keyed.get("/stock/A", headers=bearer("key-of-ops", **SHOP_B))).status_code == 404
    assert (await keyed.get("/stock/A", headers=bearer("key-of-legacy"))).status_code == 404


async def test_a_platform_key_must_name_a_registered_merchant(keyed: AsyncClient) -> None:
    without = await keyed.get("/stock/A", headers=bearer("key-of-ops"))
    unknown = await keyed.get("/stock/A", headers=bearer("key-of-ops", **{"Merchant-Id": "shop-z"}))

    assert_problem(without, 400, "Merchant-Id")
    assert_problem(unknown, 404)
    assert (await keyed.get("/health", headers=bearer("key-of-ops"))).status_code == 200


async def test_a_platform_keys_writes_are_recorded_as_platform_and_its_name(
    keyed: AsyncClient,
) -> None:
    ops = bearer("key-of-ops", **SHOP_A)
    await keyed.put("/stock/A", json={"quantity": 3}, headers=ops)
    await keyed.post(
        "/stock/A/adjustments", json={"delta": 1, "reason": "x"}, headers=bearer("key-of-a-writer")
    )

    movements = (await keyed.get("/stock/A/movements", headers=ops)).json()["items"]
    assert [m["actor"] for m in movements] == ["platform:ops", "a-writer"]


@pytest.mark.parametrize("key", ["key-of-ops", "key-of-a-writer", "key-of-legacy"])
async def test_only_a_platform_admin_key_manages_merchants(keyed: AsyncClient, key: str) -> None:
    put = await keyed.put("/merchants/shop-c", json={"name": "c"}, headers=bearer(key))
    listed = await keyed.get("/merchants", headers=bearer(key))

    assert_problem(put, 403)
    assert_problem(listed, 403)
    admin = bearer("key-of-admin")
    assert (await keyed.get("/merchants/shop-c", headers=admin)).status_code == 404


def test_keys_name_their_merchant_and_only_the_platform_has_admins() -> None:
    for entries, problem in [
        ([{"name": "x", "key": "k", "role": "admin", "merchant": "shop-a"}], "role must be"),
        ([{"name": "x", "key": "k", "role": "admin"}], "role must be"),
        ([{"name": "x", "key": "k", "role": "writer", "merchant": "Shop"}], "merchant must be"),
        ([{"name": "platform:x", "key": "k", "role": "writer"}], "may not begin with platform:"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Settings(api_keys=json.dumps(entries)).keys()
    same_name_two_merchants = [
        {"name": "x", "key": "k1", "role": "writer", "merchant": "shop-a"},
        {"name": "x", "key": "k2", "role": "writer", "merchant": "shop-b"},
    ]
    assert len(Settings(api_keys=json.dumps(same_name_two_merchants)).keys().entries) == 2


@pytest.mark.processes
def test_the_merchants_command_adds_once_lists_and_refuses_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    env = {**os.environ, "RESTOCK_DATABASE_URL": url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "restock_service", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert run("migrate").returncode == 0
    added = run("merchants", "add", "shop-a", "--name", "ショップA")
    again = run("merchants", "add", "shop-a", "--name", "other")  # changes nothing
    listed = run("merchants", "list")
    bad_id = run("merchants", "add", "Shop-A")
    bad_name = run("merchants", "add", "shop-b", "--name", "x" * 101)

    assert (added.returncode, added.stdout) == (0, "shop-a\tショップA\tregistered\n")
    assert (again.returncode, again.stdout) == (0, "shop-a\tショップA\talready registered\n")
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        ["default", "default"],
        ["shop-a", "ショップA"],
    ]
    assert bad_id.returncode == 2
    assert "'Shop-A' is not a merchant id: 1 to 32 lowercase letters" in bad_id.stderr
    assert bad_name.returncode == 1
    assert bad_name.stderr.strip() == (
        "restock-service merchants: --name: String should have at most 100 characters"
    )
    assert "shop-b" not in run("merchants", "list").stdout
