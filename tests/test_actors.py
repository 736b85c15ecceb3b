"""Who did it (contract v1.2): named keys, and the actor on every movement and resolution,
from the API; old rows keep a null actor; the books still balance."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from restock_service.access import ApiKeys, Caller, Role
from restock_service.api import create_app
from restock_service.books import check_books
from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.migrations import alembic_config
from restock_service.scope import Scope
from tests.helpers import Database, order, rakuten

NAMED = json.dumps(
    [
        {"name": "yamada", "key": "yamada-key-0001", "role": "writer"},
        {"name": "sync-batch", "key": "sync-key-0002", "role": "writer"},
        {"name": "suzuki", "key": "suzuki-key-0003", "role": "reader"},
    ]
)
YAMADA = {"Authorization": "Bearer yamada-key-0001"}
SYNC = {"Authorization": "Bearer sync-key-0002"}


@asynccontextmanager
async def keyed_app(database_url: str, keys: str) -> AsyncIterator[AsyncClient]:
    application = create_app(Settings(database_url=database_url, api_keys=SecretStr(keys)))
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def test_named_keys_parse_and_v1_keys_are_named_by_their_digest() -> None:
    named = ApiKeys.parse(NAMED)
    assert named.caller_of("yamada-key-0001") == Caller("yamada", Role.WRITER)
    assert named.caller_of("suzuki-key-0003") == Caller("suzuki", Role.READER)
    assert named.caller_of("nobody") is None
    (v1,) = ApiKeys.parse("w-secret-1:writer").entries
    assert v1[1] == Caller("key-793e1d1f", Role.WRITER)  # sha256("w-secret-1")[:8]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[", "not a JSON list"),
        ('["yamada"]', "entry 1 must look like"),
        ('[{"name": "a", "key": "k"}]', "entry 1 must look like"),
        ('[{"name": "", "key": "k", "role": "writer"}]', "name must be 1 to 64"),
        ('[{"name": "' + "n" * 65 + '", "key": "k", "role": "writer"}]', "name must be 1 to 64"),
        ('[{"name": "a", "key": "", "role": "writer"}]', "key must be"),
        ('[{"name": "a", "key": "k", "role": "admin"}]', "role must be"),
        (
            '[{"name": "a", "key": "k1", "role": "writer"},'
            ' {"name": "a", "key": "k2", "role": "reader"}]',
            "each name may appear once",
        ),
        (
            '[{"name": "a", "key": "k", "role": "writer"},'
            ' {"name": "b", "key": "k", "role": "reader"}]',
            "each key may appear once",
        ),
    ],
)
def test_malformed_named_keys_stop_the_start_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiKeys.parse(raw)


async def _story(client: AsyncClient, writer: dict[str, str], sync: dict[str, str]) -> None:
    """A sku registered, synced, cancelled, removed, failed, adjusted and resolved."""
    for sku in ("A", "B"):
        assert (await client.put(f"/stock/{sku}", json={"quantity": 10}, headers=writer)).is_success
    execution = {
        "order_no": rakuten(1),
        "mall": "rakuten",
        "items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}],
    }
    assert (await client.post("/sync-executions", json=execution, headers=sync)).is_success
    assert (await client.delete("/stock/B", headers=writer)).is_success
    cancel = {"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]}
    answer = await client.post("/restocks", json=cancel, headers=writer)
    assert answer.json()["results"][0]["code"] == "product_not_found"
    adjustment = {"delta": 2, "reason": "手動加算", "order_no": rakuten(1)}
    assert (await client.post("/stock/A/adjustments", json=adjustment, headers=writer)).is_success
    resolution = {"note": "手動で加算済み", "resolved_by": "山田"}
    resolved = await client.post(
        f"/restocks/{rakuten(1)}/resolution", json=resolution, headers=writer
    )
    assert resolved.status_code == 200, resolved.text


async def test_every_movement_and_the_resolution_carry_the_key_that_made_them(
    database_url: str, app: FastAPI, db: Database
) -> None:
    async with keyed_app(database_url, NAMED) as client:
        await _story(client, YAMADA, SYNC)
        movements = (await client.get("/stock/A/movements", headers=YAMADA)).json()["items"]
        removed = (await client.get("/stock/B/movements", headers=YAMADA)).json()["items"]
        record = (await client.get(f"/restocks/{rakuten(1)}", headers=YAMADA)).json()

    assert [(m["reason"], m["actor"]) for m in movements] == [
        ("set", "yamada"),
        ("sync_execution", "sync-batch"),
        ("adjustment", "yamada"),
    ]
    assert [(m["reason"], m["actor"]) for m in removed] == [
        ("set", "yamada"),
        ("sync_execution", "sync-batch"),
        ("delete", "yamada"),
    ]
    assert record["resolution"]["actor"] == "yamada"
    assert record["resolution"]["resolved_by"] == "山田"  # what the caller typed, as it was
    async with db.engine.connect() as conn:
        assert (await check_books(conn)).problems == ()


async def test_a_restock_movement_carries_its_actor(database_url: str, app: FastAPI) -> None:
    async with keyed_app(database_url, "w-secret-1:writer") as client:
        writer = {"Authorization": "Bearer w-secret-1"}
        await client.put("/stock/A", json={"quantity": 10}, headers=writer)
        execution = {
            "order_no": rakuten(2),
            "mall": "rakuten",
            "items": [{"sku": "A", "quantity": 3}],
        }
        await client.post("/sync-executions", json=execution, headers=writer)
        cancel = {"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(2))]}
        assert (await client.post("/restocks", json=cancel, headers=writer)).is_success
        movements = (await client.get("/stock/A/movements", headers=writer)).json()["items"]

    assert [(m["reason"], m["actor"]) for m in movements] == [
        ("set", "key-793e1d1f"),
        ("sync_execution", "key-793e1d1f"),
        ("restock", "key-793e1d1f"),
    ]


async def test_without_keys_the_actor_is_null(client: AsyncClient) -> None:
    await _story(client, {}, {})
    movements = (await client.get("/stock/A/movements")).json()["items"]
    record = (await client.get(f"/restocks/{rakuten(1)}")).json()
    assert {m["actor"] for m in movements} == {None}
    assert record["resolution"]["actor"] is None


async def test_the_console_reads_an_orders_ledger_failures_by_mall_and_newest_first(
    app: FastAPI, client: AsyncClient
) -> None:
    await _story(client, {}, {})
    for n in (2, 3):
        await client.put(f"/stock/C{n}", json={"quantity": 1})
        execution = {
            "order_no": rakuten(n),
            "mall": "rakuten",
            "items": [{"sku": f"C{n}", "quantity": 1}],
        }
        await client.post("/sync-executions", json=execution)
        await client.delete(f"/stock/C{n}")
        cancel = {"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(n))]}
        await client.post("/restocks", json=cancel)
    store = app.state.store

    scope = Scope()
    ledger = await store.order_movements(scope, rakuten(1))
    counts = await store.failure_counts(scope)
    newest = await store.restock_records(
        scope, status=None, mall=None, after=None, limit=10, newest_first=True
    )
    after_first = await store.restock_records(
        scope,
        status=None,
        mall=None,
        after=(newest[0].requested_at, newest[0].order_no),
        limit=10,
        newest_first=True,
    )

    assert [(m.sku, m.reason, m.delta) for m in ledger] == [
        ("A", "sync_execution", -2),
        ("B", "sync_execution", -1),
        ("A", "adjustment", 2),
    ]
    assert {mall.value: n for mall, n in counts.items()} == {"rakuten": 2}  # 1 was resolved
    assert [r.order_no for r in newest] == [rakuten(3), rakuten(2), rakuten(1)]
    assert [r.order_no for r in after_first] == [rakuten(2), rakuten(1)]


async def test_rows_older_than_actors_read_with_a_null_actor(
    empty_database_url: str,
) -> None:
    """Migrate to 0005, write as the service then did, upgrade: the rows stay and read."""
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0005")
    settings = Settings(database_url=empty_database_url)
    engine = create_engine(settings, pooled=False)
    at = datetime(2026, 5, 1, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO stock (sku, quantity, created_at, updated_at) "
                    "VALUES ('OLD', 5, :at, :at)"
                ),
                {"at": at},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO stock_movements (sku, delta, quantity_after, reason, at) "
                    "VALUES ('OLD', 5, 5, 'set', :at)"
                ),
                {"at": at},
            )
    finally:
        await engine.dispose()
    await asyncio.to_thread(command.upgrade, config, "head")

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            movements = (await client.get("/stock/OLD/movements")).json()["items"]
    assert [(m["reason"], m["delta"], m["actor"]) for m in movements] == [("set", 5, None)]
