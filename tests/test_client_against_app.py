"""restock_client against the real app (httpx.ASGITransport), on SQLite and PostgreSQL.

The client's models are written against the OpenAPI document; here they read the app's own
answers: every code with its outcome and 在庫戻し text from restock_service.messages, a record
and its resolution with the key that made it, the refusals with their field errors, and the
app's own 503 and in-flight 409, each retried after the Retry-After the app sent.
tests/test_client_keys.py covers the answers lost on the way.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr

import restock_client
from restock_client import (
    Code,
    Line,
    Mall,
    OrderCancel,
    RestockAuthError,
    RestockClient,
    RestockRequestError,
    RestockStatus,
)
from restock_service import messages
from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.store import Store
from tests.helpers import (
    Database,
    cancel_ok,
    key_in_flight,
    ledger,
    order,
    put_stock,
    quantity,
    rakuten,
    sync,
)

NAMED_KEYS = json.dumps(
    [
        {"name": "yamada", "key": "yamada-key-0001", "role": "writer"},
        {"name": "suzuki", "key": "suzuki-key-0003", "role": "reader"},
    ]
)


class Delays:
    """Records the client's delays; waits ``real_s`` for each (0: not at all)."""

    def __init__(self, real_s: float = 0.0) -> None:
        self.seen: list[float] = []
        self.real_s = real_s

    async def __call__(self, delay: float) -> None:
        self.seen.append(delay)
        if self.real_s:
            await asyncio.sleep(self.real_s)


@asynccontextmanager
async def client_of(app: FastAPI, **kw: Any) -> AsyncIterator[RestockClient]:
    """A RestockClient whose every request goes to ``app`` in process."""
    kw.setdefault("sleep", Delays())
    kw.setdefault("jitter", 0.0)
    transport = httpx.ASGITransport(app=app)
    async with RestockClient("http://test", transport=transport, **kw) as restock:
        yield restock


@asynccontextmanager
async def app_with(database_url: str, **settings: Any) -> AsyncIterator[FastAPI]:
    """Another app on the same database, with other settings, its lifespan running."""
    application = create_app(Settings(database_url=database_url, **settings))
    async with application.router.lifespan_context(application):
        yield application


def store_of(app: FastAPI) -> Store:
    store: Store = app.state.store
    return store


def test_the_clients_enums_have_the_services_values() -> None:
    for ours, theirs in [
        (restock_client.Mall, messages.Mall),
        (restock_client.Code, messages.Code),
        (restock_client.Outcome, messages.Outcome),
        (restock_client.RestockStatus, messages.RestockStatus),
    ]:
        assert [m.value for m in ours] == [m.value for m in theirs]


async def test_a_mixed_batch_reads_as_the_services_codes_outcomes_and_texts(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await sync(client, rakuten(1), {"A": 2})
    await sync(client, rakuten(2), {"B": 1})
    assert (await client.delete("/stock/B")).status_code == 204

    async with client_of(app) as restock:
        got = await restock.restock(
            Mall.RAKUTEN,
            [
                OrderCancel(rakuten(1), True),
                OrderCancel(rakuten(2), True),
                OrderCancel(rakuten(3), False, "キャンセルできません"),
                OrderCancel(rakuten(4), True),
            ],
            request_id="mixed-1",
        )

    assert (got.mall, got.request_id, got.attempts, got.replayed) == (
        Mall.RAKUTEN,
        "mixed-1",
        1,
        False,
    )
    codes = [r.code for r in got.results]
    assert codes == [
        Code.RESTORED,
        Code.PRODUCT_NOT_FOUND,
        Code.MALL_CANCEL_FAILED,
        Code.NO_SYNC_HISTORY,
    ]
    for r in got.results:
        server_code = messages.Code(r.code.value)
        assert r.outcome.value == messages.OUTCOME[server_code].value
        assert r.message == messages.MESSAGE[server_code]
    assert got.results[0].items == [Line("A", 2)]
    assert got.results[1].missing_skus == ["B"]
    assert (got.counts.success, got.counts.skip, got.counts.fail) == (1, 2, 1)
    assert got.messages[0] == messages.restored_count_line(1)
    assert await quantity(client, "A") == 10


async def test_records_read_typed_and_an_unknown_order_is_none(
    app: FastAPI, client: AsyncClient
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 2})
    async with client_of(app) as restock:
        await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])
        await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])
        record = await restock.get_restock(rakuten(1))
        absent = await restock.get_restock(rakuten(9))

    assert absent is None
    assert record is not None
    assert (record.order_no, record.mall, record.status, record.code) == (
        rakuten(1),
        Mall.RAKUTEN,
        RestockStatus.RESTORED,
        Code.RESTORED,
    )
    assert record.message == messages.MESSAGE[messages.Code.RESTORED]
    assert record.items == [Line("A", 2)] and record.missing_skus == []
    assert record.repeat_requests == 1
    assert record.requested_at.tzinfo is not None
    assert record.completed_at >= record.requested_at
    assert record.resolution is None


async def test_a_resolution_reads_with_the_name_of_the_key_that_made_it(
    database_url: str, app: FastAPI, db: Database
) -> None:
    writer = {"Authorization": "Bearer yamada-key-0001"}
    async with app_with(database_url, api_keys=SecretStr(NAMED_KEYS)) as keyed:
        transport = httpx.ASGITransport(app=keyed)
        async with AsyncClient(transport=transport, base_url="http://test") as raw:
            await raw.put("/stock/A", json={"quantity": 10}, headers=writer)
            await raw.put("/stock/GONE", json={"quantity": 10}, headers=writer)
            items = [{"sku": "A", "quantity": 1}, {"sku": "GONE", "quantity": 1}]
            execution = {"order_no": rakuten(1), "mall": "rakuten", "items": items}
            await raw.post("/sync-executions", json=execution, headers=writer)
            await raw.delete("/stock/GONE", headers=writer)
            async with client_of(keyed, api_key="yamada-key-0001") as restock:
                failed = await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])
                resolved = await raw.post(
                    f"/restocks/{rakuten(1)}/resolution",
                    json={"note": "手動で加算済み", "resolved_by": "山田"},
                    headers=writer,
                )
                assert resolved.status_code == 200, resolved.text
                record = await restock.get_restock(rakuten(1))

    assert failed.results[0].code is Code.PRODUCT_NOT_FOUND
    assert record is not None and record.status is RestockStatus.RESOLVED
    assert record.resolution is not None
    assert (record.resolution.note, record.resolution.resolved_by) == ("手動で加算済み", "山田")
    assert record.resolution.actor == "yamada"
    assert record.resolution.resolved_at <= datetime.now(UTC)


async def test_without_a_valid_key_or_with_a_reader_key_the_client_raises_auth_errors(
    database_url: str, app: FastAPI
) -> None:
    async with app_with(database_url, api_keys=SecretStr(NAMED_KEYS)) as keyed:
        async with client_of(keyed) as anonymous:
            with pytest.raises(RestockAuthError) as no_key:
                await anonymous.restock("rakuten", [OrderCancel(rakuten(1), True)])
        async with client_of(keyed, api_key="suzuki-key-0003") as reader:
            with pytest.raises(RestockAuthError) as reading:
                await reader.adjust("A", 1, "棚卸し")
            assert await reader.get_restock(rakuten(1)) is None  # a reader may read

    assert (no_key.value.status, no_key.value.attempts) == (401, 1)
    assert no_key.value.detail
    assert (reading.value.status, reading.value.attempts) == (403, 1)


async def test_a_refused_batch_raises_with_the_apps_field_errors_and_changes_nothing(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    async with client_of(app) as restock:
        with pytest.raises(RestockRequestError) as caught:
            await restock.restock("rakuten", [OrderCancel("12345", True)], request_id="bad-1")

    err = caught.value
    assert (err.status, err.attempts, err.request_id) == (422, 1, "bad-1")
    (field,) = err.errors
    assert (field.field, field.location, field.input) == ("orders[0].order_no", "body", "12345")
    assert field.message and field.type
    assert err.detail is not None and "orders[0].order_no" in err.detail
    assert await ledger(db) == []


async def test_adjusting_an_unknown_sku_raises_a_request_error(app: FastAPI) -> None:
    async with client_of(app) as restock:
        with pytest.raises(RestockRequestError) as caught:
            await restock.adjust("NOPE", 1, "棚卸し")
    assert caught.value.status == 404 and caught.value.attempts == 1
    assert caught.value.idempotency_key


async def test_the_apps_503_is_retried_after_the_retry_after_it_sent(
    database_url: str, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 2})
    await cancel_ok(client, [order(rakuten(1))])
    delays = Delays()
    async with app_with(database_url, retry_after_s=3) as other:
        store = store_of(other)
        read = store.restock_record
        failures = [OSError("connection refused")]

        async def unreachable_once(scope: Any, order_no: str) -> Any:
            if failures:
                raise failures.pop()
            return await read(scope, order_no)

        monkeypatch.setattr(store, "restock_record", unreachable_once)
        async with client_of(other, sleep=delays) as restock:
            record = await restock.get_restock(rakuten(1))

    assert failures == []  # the first attempt met the unreachable database
    assert delays.seen == [3.0]
    assert record is not None and record.code is Code.RESTORED


async def test_the_apps_in_flight_409_is_retried_after_its_retry_after_and_moves_stock_once(
    database_url: str, client: AsyncClient, db: Database
) -> None:
    """The key held by the lost first attempt while it runs (then it dies): PostgreSQL
    answers 409 with Retry-After, which the client waits out; SQLite waits for its lock."""
    await put_stock(client, "A", 10)
    async with app_with(database_url) as short, key_in_flight(db, "k-1", for_s=0.3):
        delays = Delays(real_s=0.4)  # long enough for the first attempt to die
        async with client_of(short, sleep=delays) as restock:
            got = await restock.adjust("A", 5, "棚卸し", idempotency_key="k-1")

    if db.dialect == "postgresql":
        assert delays.seen == [1.0]  # the app's Retry-After on its 409
        assert (got.quantity, got.attempts, got.replayed) == (15, 2, False)
    else:
        assert delays.seen == []
        assert (got.quantity, got.attempts, got.replayed) == (15, 1, False)
    assert await quantity(client, "A") == 15


async def test_a_platform_key_names_its_merchant_and_a_merchant_key_needs_none(
    database_url: str, client: AsyncClient
) -> None:
    """Contract v1.3: the client sends ``Merchant-Id`` for the merchant it was given."""
    keys = json.dumps(
        [
            {"name": "ops", "key": "platform-key-1", "role": "writer", "merchant": "*"},
            {"name": "sync", "key": "shop-a-key-1", "role": "writer", "merchant": "shop-a"},
        ]
    )
    assert (await client.put("/merchants/shop-a", json={"name": "A"})).status_code == 201
    client.headers["Merchant-Id"] = "shop-a"
    await put_stock(client, "A", 10)
    async with app_with(database_url, api_keys=keys) as keyed:
        async with client_of(keyed, api_key="platform-key-1", merchant="shop-a") as platform:
            by_platform = await platform.adjust("A", 1, "棚卸し")
        async with client_of(keyed, api_key="shop-a-key-1") as shop:
            by_shop = await shop.adjust("A", 1, "棚卸し")
        async with client_of(keyed, api_key="platform-key-1") as unnamed:
            with pytest.raises(RestockRequestError) as refused:
                await unnamed.adjust("A", 1, "棚卸し")

    assert (by_platform.quantity, by_shop.quantity) == (11, 12)
    assert refused.value.status == 400
    assert await quantity(client, "A") == 12
