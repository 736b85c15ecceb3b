"""Idempotency keys (contract v1.2), on SQLite and PostgreSQL: first use, replay byte for
byte, mismatch, in flight, lapsed claims, scope, retention and the required header."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from restock_service import idempotency
from restock_service.api import create_app
from restock_service.books import check_books
from restock_service.config import Settings
from restock_service.idempotency import KeyState, new_claim, state_of
from restock_service.scope import Scope
from restock_service.store import Store, key_row
from restock_service.tables import DEFAULT_MERCHANT, idempotency_keys, stock_movements
from tests.helpers import (
    Database,
    count_rows,
    key_in_flight,
    ledger,
    order,
    put_stock,
    quantity,
    rakuten,
    repeat_requests,
    sync,
)

REPLAYED = "Idempotent-Replayed"


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


async def adjust(client: AsyncClient, sku: str, delta: int, key: str | None, **extra: Any):
    body = {"delta": delta, "reason": "棚卸し", **extra}
    headers = keyed(key) if key is not None else {}
    return await client.post(f"/stock/{sku}/adjustments", json=body, headers=headers)


@asynccontextmanager
async def app_with(database_url: str, **settings: Any) -> AsyncIterator[AsyncClient]:
    """A client of an app with other settings, on the same database (``client.app``)."""
    application = create_app(Settings(database_url=database_url, **settings))
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = application  # type: ignore[attr-defined]
            yield client


def store_of(app: FastAPI) -> Store:
    store: Store = app.state.store
    return store


async def key_rows(db: Database) -> int:
    return await count_rows(db, idempotency_keys)


# --- first use and replay ------------------------------------------------------------------


async def test_a_retried_adjustment_moves_stock_once_and_gets_the_first_answer_byte_for_byte(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)

    first = await adjust(client, "A", 5, "adjust-A-1")
    again = await adjust(client, "A", 5, "adjust-A-1")

    assert first.status_code == 200
    assert REPLAYED not in first.headers
    assert again.status_code == first.status_code
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await quantity(client, "A") == 15
    assert await ledger(db, "adjustment") == [("A", 5, None)]


async def test_without_a_key_a_write_behaves_as_in_v1(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    await adjust(client, "A", 5, None)
    again = await adjust(client, "A", 5, None)
    assert REPLAYED not in again.headers
    assert await quantity(client, "A") == 20


async def test_a_replayed_restock_answers_restored_again_and_counts_nothing_again(
    client: AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 3})
    body = {"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]}

    first = await client.post("/restocks", json=body, headers=keyed("cancel-1"))
    metrics_before = (await client.get("/metrics")).text
    caplog.clear()
    with caplog.at_level("INFO", logger="restock_service.restock"):
        again = await client.post("/restocks", json=body, headers=keyed("cancel-1"))
    metrics_after = (await client.get("/metrics")).text

    assert first.json()["results"][0]["code"] == "restored"
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert await quantity(client, "A") == 10
    assert await repeat_requests(db, rakuten(1)) == 0
    orders_line = 'restock_orders_total{code="restored",mall="rakuten"} 1.0'
    assert orders_line in metrics_before and orders_line in metrics_after
    assert 'restock_idempotent_requests_total{outcome="replayed"} 1.0' in metrics_after
    (decision,) = [r for r in caplog.records if r.getMessage().startswith("restock decision")]
    assert (decision.code, decision.replayed) == ("restored", True)  # type: ignore[attr-defined]
    assert decision.getMessage().endswith("(replayed)")


async def test_a_mixed_batch_replays_every_line_of_its_first_answer(
    client: AsyncClient, db: Database
) -> None:
    """Restored, repeated and failed orders in one batch: on PostgreSQL the write reads, then
    writes, and the receipt keeps the rows of both statements."""
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 1})
    await sync(client, rakuten(2), {"A": 2})
    await put_stock(client, "GONE", 1)
    await sync(client, rakuten(3), {"GONE": 1})
    await client.delete("/stock/GONE")
    orders = [order(rakuten(n)) for n in (1, 2, 3, 4)]
    await client.post("/restocks", json={"mall": "rakuten", "restore_stock": True,
                                         "orders": orders[:1]})  # fmt: skip
    body = {"mall": "rakuten", "restore_stock": True, "orders": orders}

    first = await client.post("/restocks", json=body, headers=keyed("mixed"))
    again = await client.post("/restocks", json=body, headers=keyed("mixed"))

    codes = [r["code"] for r in first.json()["results"]]
    assert codes == ["already_restored", "restored", "product_not_found", "no_sync_history"], codes
    assert (again.headers[REPLAYED], again.content) == ("true", first.content)
    assert await quantity(client, "A") == 10
    assert await repeat_requests(db, rakuten(1)) == 1  # the first answer's repeat, once


async def test_a_restock_stays_once_per_order_whatever_keys_are_sent(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 3})
    body = {"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]}

    first = await client.post("/restocks", json=body, headers=keyed("one"))
    second = await client.post("/restocks", json=body, headers=keyed("another"))

    assert first.json()["results"][0]["code"] == "restored"
    assert second.json()["results"][0]["code"] == "already_restored"
    assert REPLAYED not in second.headers
    assert await quantity(client, "A") == 10  # deducted by the sync, restored once
    assert await ledger(db, "restock") == [("A", 3, rakuten(1))]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/stock/B", {"quantity": 7}, 200),
        ("DELETE", "/stock/A", None, 204),
        ("POST", "/sync-executions", {"order_no": rakuten(9), "mall": "rakuten",
                                      "items": [{"sku": "A", "quantity": 1}]}, 201),
        ("POST", "/sync-executions/batch", {"executions": [
            {"order_no": rakuten(9), "mall": "rakuten", "items": [{"sku": "A", "quantity": 1}]}
        ]}, 200),
    ],
)  # fmt: skip
async def test_every_write_replays_its_first_answer(
    client: AsyncClient, db: Database, method: str, path: str, body: Any, status: int
) -> None:
    await put_stock(client, "A", 10)
    movements = await count_rows(db, stock_movements)

    first = await client.request(method, path, json=body, headers=keyed("k"))
    again = await client.request(method, path, json=body, headers=keyed("k"))

    assert first.status_code == status, first.text
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers[REPLAYED] == "true"
    assert await count_rows(db, stock_movements) == movements + 1


async def test_a_resolution_replays_its_first_answer(client: AsyncClient, db: Database) -> None:
    await put_stock(client, "A", 1)
    await sync(client, rakuten(1), {"A": 1})
    await client.delete("/stock/A")
    failed = await client.post(
        "/restocks",
        json={"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]},
    )
    assert failed.json()["results"][0]["code"] == "product_not_found"
    note = {"note": "手動で加算済み", "resolved_by": "yamada"}

    first = await client.post(f"/restocks/{rakuten(1)}/resolution", json=note, headers=keyed("r"))
    again = await client.post(f"/restocks/{rakuten(1)}/resolution", json=note, headers=keyed("r"))
    plain = await client.post(f"/restocks/{rakuten(1)}/resolution", json=note)

    assert first.status_code == 200, first.text
    assert (again.status_code, again.content) == (200, first.content)
    assert plain.status_code == 409  # without the key, the second resolution conflicts


async def test_a_4xx_answer_is_stored_and_replayed(client: AsyncClient) -> None:
    missing = await adjust(client, "LATER", 5, "adjust-later")
    await put_stock(client, "LATER", 1)
    again = await adjust(client, "LATER", 5, "adjust-later")

    assert missing.status_code == 404
    assert (again.status_code, again.content) == (404, missing.content)
    assert again.headers[REPLAYED] == "true"
    assert await quantity(client, "LATER") == 1


# --- refusals: the key, mismatch, in flight ---------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"a b",
        b"x" * 256,
        "キー".encode(),
        b"tab\there",
        b"\x7f",
        b"console:0123456789abcdef",
    ],
)
async def test_a_malformed_key_is_400_naming_the_header_and_nothing_is_done(
    client: AsyncClient, db: Database, raw: bytes
) -> None:
    await put_stock(client, "A", 10)
    response = await client.post(
        "/stock/A/adjustments",
        json={"delta": 1, "reason": "x"},
        headers=[(b"Idempotency-Key", raw)],
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert problem["errors"][0]["location"] == "header"
    assert await quantity(client, "A") == 10
    assert await key_rows(db) == 0


async def test_a_key_of_255_visible_characters_is_accepted(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    key = "".join(chr(0x21 + i % 94) for i in range(255))
    response = await adjust(client, "A", 1, key)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/stock/A/adjustments", {"delta": 6, "reason": "棚卸し"}),
        ("/stock/B/adjustments", {"delta": 5, "reason": "棚卸し"}),
    ],
)
async def test_a_key_reused_for_another_request_is_422_and_nothing_is_done(
    client: AsyncClient, db: Database, path: str, body: dict[str, Any]
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await adjust(client, "A", 5, "k")

    response = await client.post(path, json=body, headers=keyed("k"))

    assert response.status_code == 422
    problem = response.json()
    assert "was used for another request" in problem["detail"]
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert await quantity(client, "A") == 15
    assert await quantity(client, "B") == 10
    assert 'outcome="mismatch"' in (await client.get("/metrics")).text


async def test_a_request_whose_key_is_in_flight_is_409_with_retry_after_on_postgresql(
    client: AsyncClient, db: Database
) -> None:
    """On PostgreSQL a request meets the key of one still in its write and is told to come
    back; on SQLite it waits for that write's lock. Either way it is done once."""
    await put_stock(client, "A", 10)
    body = b'{"delta":5,"reason":"x"}'
    headers = {**keyed("k"), "content-type": "application/json"}

    async with key_in_flight(db, "k", for_s=0.3):
        during = await client.post("/stock/A/adjustments", content=body, headers=headers)
        quantity_during = await quantity(client, "A")
    after = await client.post("/stock/A/adjustments", content=body, headers=headers)

    if db.dialect == "postgresql":
        assert during.status_code == 409
        assert during.headers["retry-after"] == "1"
        assert quantity_during == 10
        assert after.status_code == 200, after.text
        assert REPLAYED not in after.headers  # the first request died: this one applies
    else:
        assert during.status_code == 200, during.text
        assert after.headers[REPLAYED] == "true"
    assert await quantity(client, "A") == 15


async def test_a_duplicate_storm_on_two_apps_moves_stock_once(
    client: AsyncClient, second_app: FastAPI, db: Database
) -> None:
    await put_stock(client, "A", 10)
    transport = ASGITransport(app=second_app)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        clients = [client, other]
        responses = await asyncio.gather(
            *(adjust(clients[i % 2], "A", 5, "storm") for i in range(30))
        )

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, [r.text for r in responses][:3]
    firsts = [r for r in responses if r.status_code != 409 and REPLAYED not in r.headers]
    assert len(firsts) == 1
    replays = [r for r in responses if REPLAYED in r.headers]
    assert all(r.content == firsts[0].content for r in replays)
    assert await quantity(client, "A") == 15
    final = await adjust(client, "A", 5, "storm")
    assert (final.headers[REPLAYED], final.content) == ("true", firsts[0].content)


async def test_overlapping_keyed_batches_restore_each_order_once(
    client: AsyncClient, second_app: FastAPI, db: Database
) -> None:
    skus = [f"S{i}" for i in range(6)]
    for sku in skus:
        await put_stock(client, sku, 100)
    order_nos = [rakuten(i) for i in range(12)]
    for i, order_no in enumerate(order_nos):
        await sync(client, order_no, {skus[i % 6]: 1, skus[(i + 1) % 6]: 2})
    forward = {"mall": "rakuten", "restore_stock": True, "orders": [order(n) for n in order_nos]}
    backward = {**forward, "orders": list(reversed(forward["orders"]))}
    transport = ASGITransport(app=second_app)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        responses = await asyncio.gather(
            *(
                (client if i % 2 else other).post(
                    "/restocks", json=forward if i % 2 else backward, headers=keyed(f"b{i}")
                )
                for i in range(8)
            )
        )

    assert {r.status_code for r in responses} == {200}, [r.text for r in responses][:2]
    codes = Counter(x["code"] for r in responses for x in r.json()["results"])
    assert codes["restored"] == 12
    assert set((await _quantities(client, skus)).values()) == {100}


async def _quantities(client: AsyncClient, skus: list[str]) -> dict[str, int | None]:
    return {sku: await quantity(client, sku) for sku in skus}


# --- the store: keys taken as idempotency.state_of decides ---------------------------------


def _row(now: datetime, **changes: Any) -> dict[str, Any]:
    row = {
        "merchant_id": DEFAULT_MERCHANT,
        "owner": "",
        "key": "k",
        "fingerprint": b"f" * 32,
        "receipt": None,
        "created_at": now - timedelta(seconds=1),
        "expires_at": now + timedelta(hours=1),
    }
    row.update(changes)
    return row


STATES = {
    "row without a receipt": {},  # as a claim of v1.2 left it
    "stored receipt": {"receipt": b"[]"},
    "forgotten receipt": {"receipt": b"[]", "expires_at": "past"},
    "forgotten row without a receipt": {"expires_at": "past"},
}


@pytest.mark.parametrize("state", [None, *STATES])
async def test_a_keyed_write_takes_the_key_exactly_when_state_of_says_it_is_free(
    app: FastAPI, client: AsyncClient, db: Database, state: str | None
) -> None:
    await put_stock(client, "A", 10)
    now = datetime.now(UTC)
    before: dict[str, Any] | None = None
    if state is not None:
        changes = {
            k: now - timedelta(seconds=1) if v == "past" else v for k, v in STATES[state].items()
        }
        before = _row(now, **changes)
        await db.write(lambda conn: conn.execute(sa.insert(idempotency_keys).values(**before)))
    claim = new_claim(DEFAULT_MERCHANT, "", "k", b"g" * 32, now, ttl_s=60)
    request = idempotency.Keyed(claim)

    with suppress(idempotency.KeyHeld):
        scope = Scope(keyed=request)
        await store_of(app).adjust_stock(scope, "A", 5, "x", None, now, limit=10**9)

    async with db.engine.connect() as conn:
        (after,) = (await conn.execute(sa.select(idempotency_keys))).mappings().all()
    free = state_of(key_row(before) if before else None, now) is KeyState.FREE
    assert request.held is not free
    assert await quantity(client, "A") == (15 if free else 10)
    if free:
        assert after["fingerprint"] == claim.fingerprint
        assert after["receipt"] is not None
    else:  # untouched
        assert before is not None
        assert (after["fingerprint"], after["receipt"]) == (
            before["fingerprint"],
            before["receipt"],
        )


async def test_a_write_that_fails_keeps_no_key_and_its_retry_is_processed_afresh(
    database_url: str, client: AsyncClient, db: Database
) -> None:
    """A 5xx (here the deadline, past a lock held elsewhere) keeps nothing: no effect, no key."""
    if db.dialect != "postgresql":
        pytest.skip("holds a row lock from another connection")
    await put_stock(client, "A", 10)
    async with app_with(database_url, db_deadline_s=0.5) as short:
        async with db.engine.connect() as blocker:
            held = await blocker.begin()
            await blocker.execute(sa.text("SELECT 1 FROM stock WHERE sku = 'A' FOR UPDATE"))
            failed = await adjust(short, "A", 5, "k")
            await asyncio.sleep(0.5)  # the abandoned statement is cancelled meanwhile
            await held.rollback()
        again = await adjust(short, "A", 5, "k")

    assert failed.status_code == 503, failed.text
    assert again.status_code == 200, again.text
    assert REPLAYED not in again.headers
    assert await quantity(client, "A") == 15


# --- scope, retention, required --------------------------------------------------------------

KEYS = "writer-a-key-0001:writer,writer-b-key-0002:writer"


async def test_a_key_belongs_to_the_caller_and_never_replays_another_callers_answer(
    database_url: str, app: FastAPI
) -> None:
    async with app_with(database_url, api_keys=SecretStr(KEYS)) as c:
        a = {"Authorization": "Bearer writer-a-key-0001"}
        b = {"Authorization": "Bearer writer-b-key-0002"}
        await c.put("/stock/A", json={"quantity": 10}, headers=a)
        body = {"delta": 5, "reason": "x"}

        first_a = await c.post("/stock/A/adjustments", json=body, headers={**a, **keyed("k")})
        first_b = await c.post("/stock/A/adjustments", json=body, headers={**b, **keyed("k")})
        other_b = await c.post(
            "/stock/A/adjustments", json={**body, "delta": 1}, headers={**b, **keyed("k2")}
        )
        again_a = await c.post("/stock/A/adjustments", json=body, headers={**a, **keyed("k")})

    assert REPLAYED not in first_b.headers
    assert first_a.json()["quantity"] == 15
    assert first_b.json()["quantity"] == 20
    assert other_b.json()["quantity"] == 21
    assert (again_a.headers[REPLAYED], again_a.content) == ("true", first_a.content)


async def test_a_forgotten_key_is_a_new_request_and_purges_remove_it_in_batches(
    database_url: str, db: Database, app: FastAPI, client: AsyncClient
) -> None:
    await put_stock(client, "A", 10)
    async with app_with(database_url, idempotency_ttl_s=1) as short:
        for i in range(25):
            await adjust(short, "A", 1, f"k{i}")
        assert await key_rows(db) == 25
        await asyncio.sleep(1.1)
        again = await adjust(short, "A", 1, "k0")  # forgotten: processed afresh
        other = await adjust(short, "A", 2, "k1")  # forgotten: no mismatch either

    assert REPLAYED not in again.headers
    assert other.status_code == 200
    assert await quantity(client, "A") == 10 + 25 + 1 + 2
    store = store_of(app)
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert [await store.purge_keys(later, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert await key_rows(db) == 0


async def test_each_worker_removes_forgotten_keys_by_itself(
    database_url: str, db: Database, client: AsyncClient
) -> None:
    await put_stock(client, "A", 10)
    settings = {"idempotency_ttl_s": 1, "idempotency_purge_interval_s": 0.2}
    async with app_with(database_url, **settings) as short:
        for i in range(5):
            await adjust(short, "A", 1, f"k{i}")
        assert await key_rows(db) == 5
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await key_rows(db) == 0:
                break
    assert await key_rows(db) == 0


async def test_the_books_leave_keys_out(client: AsyncClient, db: Database) -> None:
    await put_stock(client, "A", 10)
    await adjust(client, "A", 5, "k")
    async with db.engine.connect() as conn:
        report = await check_books(conn)
    assert report.problems == ()


async def test_a_required_key_refuses_writes_without_one_and_not_reads(
    database_url: str, app: FastAPI, db: Database
) -> None:
    async with app_with(database_url, idempotency_required=True) as strict:
        refused = await strict.put("/stock/A", json={"quantity": 1})
        read = await strict.get("/stock/A")
        accepted = await strict.put("/stock/A", json={"quantity": 1}, headers=keyed("p"))

    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "Idempotency-Key"
    assert read.status_code == 404
    assert accepted.status_code == 200
    assert await ledger(db) == [("A", 1, None)]


async def test_a_key_on_a_read_or_an_unknown_route_changes_nothing(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    read = await client.get("/stock/A", headers=keyed("k"))
    unknown = await client.post("/nowhere", json={}, headers=keyed("k"))
    assert read.status_code == 200 and REPLAYED not in read.headers
    assert unknown.status_code == 404


async def test_a_keyed_invalid_body_is_answered_as_without_a_key(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    response = await client.post(
        "/stock/A/adjustments", json={"delta": "five"}, headers=keyed("bad")
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"delta", "reason"}


async def test_replays_keep_their_content_type_and_request_id(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    await adjust(client, "A", 5, "k")
    again = await client.post(
        "/stock/A/adjustments",
        json={"delta": 5, "reason": "棚卸し"},
        headers={**keyed("k"), "X-Request-ID": "retry-1"},
    )
    assert again.headers["x-request-id"] == "retry-1"
    assert again.headers["content-type"] == "application/json"
    assert int(again.headers["content-length"]) == len(again.content)
