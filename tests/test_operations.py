"""The operations calls of contract v1.1, over HTTP, on SQLite and PostgreSQL.

GET /restocks, POST /restocks/{order_no}/resolution, POST /stock/{sku}/adjustments,
GET /stock/{sku}/movements, GET /stock-changes and GET /metrics: exact answers, keyset
pages that neither repeat nor skip, forged cursors answered 422, and every 4xx leaving the
books exactly as they were.
"""

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from httpx import ASGITransport, AsyncClient, Response

from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.messages import MESSAGE, Code
from restock_service.tables import DEFAULT_MERCHANT, restocks, stock, stock_movements
from tests.helpers import (
    Database,
    amazon,
    cancel_ok,
    ledger,
    order,
    put_stock,
    quantities,
    quantity,
    rakuten,
    repeat_requests,
    sync,
)

Json = dict[str, Any]
PROBLEM_JSON = "application/problem+json"
RECORD_KEYS = {
    "order_no",
    "mall",
    "status",
    "code",
    "message",
    "items",
    "missing_skus",
    "requested_at",
    "completed_at",
    "repeat_requests",
    "resolution",
}
MOVEMENT_KEYS = {
    "id",
    "sku",
    "delta",
    "quantity_after",
    "reason",
    "order_no",
    "at",
    "note",
    "actor",
}
CHANGE_KEYS = {"sku", "quantity", "deleted", "changed_at"}


def forge(*value: Any) -> str:
    """A cursor built the way the service builds its own, around a made-up position."""
    return base64.urlsafe_b64encode(json.dumps(list(value)).encode()).decode().rstrip("=")


GARBAGE_CURSORS = {
    "not base64": "abc",
    "base64 of garbage": base64.urlsafe_b64encode(b"\xff\x00\x13garbage\x80").decode(),
    "base64 of a json object": base64.urlsafe_b64encode(b'{"at": 1}').decode(),
    "empty json list": forge(),
}


def at(value: str) -> datetime:
    """An answer's timestamp, which must carry an explicit offset."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def assert_problem(response: Response, status: int, field: str, location: str) -> None:
    """An RFC 9457 answer of ``status`` whose errors name ``field`` at ``location``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    named = {(e["field"], e["location"]) for e in body.get("errors", [])}
    assert (field, location) in named, body


async def books(db: Database) -> tuple[list[Any], list[Any], list[Any]]:
    """Every stock row, ledger row and restock record, to prove that nothing changed."""
    async with db.engine.connect() as conn:
        return (
            [tuple(r) for r in await conn.execute(sa.select(stock).order_by(stock.c.sku))],
            [
                tuple(r)
                for r in await conn.execute(
                    sa.select(stock_movements).order_by(stock_movements.c.id)
                )
            ],
            [
                tuple(r)
                for r in await conn.execute(sa.select(restocks).order_by(restocks.c.order_no))
            ],
        )


async def get_json(client: AsyncClient, url: str, **params: Any) -> Json:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def record(client: AsyncClient, order_no: str) -> Json:
    return await get_json(client, f"/restocks/{order_no}")


async def all_pages(client: AsyncClient, url: str, **params: Any) -> list[list[Json]]:
    """Follow ``next_cursor`` until it is null; the pages' items, in order."""
    pages: list[list[Json]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        body = await get_json(client, url, **query)
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the pages never end"


async def movements(client: AsyncClient, sku: str) -> list[Json]:
    body = await get_json(client, f"/stock/{sku}/movements", limit=500)
    assert body["next_cursor"] is None
    items: list[Json] = body["items"]
    return items


async def failed_record(client: AsyncClient, kind: Code, n: int = 1) -> str:
    """An order whose restock was recorded as failed with ``kind``."""
    await put_stock(client, "A", 10)
    await put_stock(client, "GONE", 10)
    order_no = rakuten(n)
    if kind is Code.PRODUCT_NOT_FOUND:
        await sync(client, order_no, {"A": 2, "GONE": 1})
        assert (await client.delete("/stock/GONE")).status_code == 204
    else:
        await sync(client, order_no, {"A": 2}, mall="yahoo")
    body = await cancel_ok(client, [order(order_no)])
    assert body["results"][0]["code"] == kind
    return order_no


async def restored_record(client: AsyncClient, n: int = 50) -> str:
    await put_stock(client, "R", 10)
    order_no = rakuten(n)
    await sync(client, order_no, {"R": 3})
    body = await cancel_ok(client, [order(order_no)])
    assert body["results"][0]["code"] == Code.RESTORED
    return order_no


# --- GET /restocks --------------------------------------------------------------------


async def make_23_records(client: AsyncClient) -> dict[str, tuple[str, str]]:
    """23 records in 4 batches (restored and failed, rakuten and amazon); order → (status, mall).

    The batches send their orders out of order_no order, and later batches carry lower
    order numbers, so only (requested_at, order_no) sorts them right.
    """
    await put_stock(client, "A", 1000)
    await put_stock(client, "GONE", 100)
    expected: dict[str, tuple[str, str]] = {}
    batches: list[tuple[str, list[str]]] = []

    async def prepare(mall: str, numbers: list[int], failing: set[int]) -> None:
        names = []
        for n in numbers:
            order_no = amazon(n) if mall == "amazon" else rakuten(n)
            items = {"A": 1, "GONE": 1} if n in failing else {"A": 1}
            await sync(client, order_no, items, mall=mall)
            expected[order_no] = ("failed" if n in failing else "restored", mall)
            names.append(order_no)
        batches.append((mall, names))

    await prepare("rakuten", [90, 95, 91, 99, 93, 92, 97], failing={91, 97})
    await prepare("rakuten", [60, 55, 58, 51, 57, 59], failing={55, 59})
    await prepare("amazon", [30, 10, 20, 40, 15], failing={20})
    await prepare("rakuten", [5, 3, 4, 1, 2], failing={3})
    assert len(expected) == 23
    assert (await client.delete("/stock/GONE")).status_code == 204
    for mall, names in batches:
        await cancel_ok(client, [order(n) for n in names], mall=mall)
    return expected


async def oldest_first(client: AsyncClient, order_nos: list[str]) -> list[Json]:
    """The records as GET /restocks/{order_no} shows them, oldest requested_at first."""
    records = [await record(client, n) for n in order_nos]
    return sorted(records, key=lambda r: (at(r["requested_at"]), r["order_no"]))


async def test_list_restocks_pages_of_five_concatenate_to_every_record_once_oldest_first(
    client: AsyncClient,
) -> None:
    expected_status = await make_23_records(client)
    expected = await oldest_first(client, list(expected_status))

    pages = await all_pages(client, "/restocks", limit=5)

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    listed = [item for page in pages for item in page]
    assert listed == expected
    assert len({r["order_no"] for r in listed}) == 23
    # Batches share a requested_at, so the tie-break by order_no is really exercised.
    assert len({r["requested_at"] for r in listed}) == 4
    assert listed[0]["order_no"] == rakuten(90)
    assert listed[-1]["order_no"] == rakuten(5)
    assert {r["order_no"]: (r["status"], r["mall"]) for r in listed} == expected_status


async def test_list_restocks_without_cursor_lists_oldest_requested_at_first(
    client: AsyncClient,
) -> None:
    expected_status = await make_23_records(client)

    body = await get_json(client, "/restocks")

    assert body["next_cursor"] is None
    assert body["items"] == await oldest_first(client, list(expected_status))
    times = [at(r["requested_at"]) for r in body["items"]]
    assert times == sorted(times)


async def test_list_restocks_pages_where_the_page_boundary_falls_inside_a_shared_timestamp(
    client: AsyncClient,
) -> None:
    expected_status = await make_23_records(client)
    expected = await oldest_first(client, list(expected_status))

    for limit in (1, 2, 3, 4, 6, 7, 22, 23, 24):
        pages = await all_pages(client, "/restocks", limit=limit)
        assert [item for page in pages for item in page] == expected, limit
        assert all(len(p) == limit for p in pages[:-1])
        assert 0 < len(pages[-1]) <= limit


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ({"status": "restored"}, lambda status, mall: status == "restored"),
        ({"status": "failed"}, lambda status, mall: status == "failed"),
        ({"mall": "rakuten"}, lambda status, mall: mall == "rakuten"),
        ({"mall": "amazon"}, lambda status, mall: mall == "amazon"),
        ({"mall": "yahoo"}, lambda status, mall: False),
        (
            {"status": "failed", "mall": "rakuten"},
            lambda status, mall: status == "failed" and mall == "rakuten",
        ),
    ],
    ids=["restored", "failed", "rakuten", "amazon", "yahoo", "failed-rakuten"],
)
async def test_list_restocks_filters_by_status_and_mall_and_pages_within_the_filter(
    client: AsyncClient, query: dict[str, str], wanted: Any
) -> None:
    expected_status = await make_23_records(client)
    expected = await oldest_first(
        client, [n for n, (status, mall) in expected_status.items() if wanted(status, mall)]
    )

    whole = await get_json(client, "/restocks", **query)
    paged = await all_pages(client, "/restocks", limit=2, **query)

    assert whole == {"items": expected, "next_cursor": None}
    assert [item for page in paged for item in page] == expected


async def test_list_restocks_status_resolved_lists_only_records_settled_by_hand(
    client: AsyncClient,
) -> None:
    expected_status = await make_23_records(client)
    settled = [rakuten(97), amazon(20)]
    for order_no in settled:
        response = await client.post(
            f"/restocks/{order_no}/resolution", json={"note": "fixed", "resolved_by": "ops"}
        )
        assert response.status_code == 200, response.text

    resolved = await get_json(client, "/restocks", status="resolved")
    failed = await get_json(client, "/restocks", status="failed")

    assert resolved["items"] == await oldest_first(client, settled)
    assert all(r["status"] == "resolved" and r["resolution"] for r in resolved["items"])
    still_failed = [n for n, (s, _) in expected_status.items() if s == "failed"]
    assert {r["order_no"] for r in failed["items"]} == set(still_failed) - set(settled)


async def test_list_restocks_item_is_exactly_the_get_restock_record(client: AsyncClient) -> None:
    failed = await failed_record(client, Code.PRODUCT_NOT_FOUND, 1)
    restored = await restored_record(client, 2)

    items = (await get_json(client, "/restocks"))["items"]

    by_no = {r["order_no"]: r for r in items}
    assert by_no[failed] == await record(client, failed)
    assert by_no[restored] == await record(client, restored)
    assert set(by_no[failed]) == RECORD_KEYS
    assert by_no[failed]["missing_skus"] == ["GONE"]
    assert by_no[failed]["resolution"] is None


async def test_list_restocks_on_an_empty_database_is_an_empty_last_page(
    client: AsyncClient,
) -> None:
    assert await get_json(client, "/restocks") == {"items": [], "next_cursor": None}


async def test_list_restocks_next_cursor_is_null_on_a_page_that_exactly_fills_the_limit(
    client: AsyncClient,
) -> None:
    await failed_record(client, Code.MALL_MISMATCH, 1)
    await restored_record(client, 2)

    body = await get_json(client, "/restocks", limit=2)

    assert len(body["items"]) == 2
    assert body["next_cursor"] is None


async def test_list_restocks_default_limit_is_100(client: AsyncClient, db: Database) -> None:
    base = datetime(2026, 5, 25, tzinfo=UTC)
    rows = [
        {
            "merchant_id": DEFAULT_MERCHANT,
            "order_no": rakuten(n),
            "mall": "rakuten",
            "status": "failed",
            "code": "mall_mismatch",
            "requested_at": base + timedelta(seconds=n // 3),
            "completed_at": base + timedelta(seconds=n // 3),
            "repeat_requests": 0,
        }
        for n in range(105)
    ]
    async with db.engine.begin() as conn:
        await conn.execute(sa.insert(restocks), rows)

    first = await get_json(client, "/restocks")
    second = await get_json(client, "/restocks", cursor=first["next_cursor"])

    assert [r["order_no"] for r in first["items"]] == [rakuten(n) for n in range(100)]
    assert first["next_cursor"] is not None
    assert [r["order_no"] for r in second["items"]] == [rakuten(n) for n in range(100, 105)]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 500])
async def test_list_restocks_accepts_limit_bounds(client: AsyncClient, limit: int) -> None:
    await restored_record(client)
    assert len((await get_json(client, "/restocks", limit=limit))["items"]) == 1


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1.5", ""])
async def test_list_restocks_limit_outside_1_to_500_is_422_naming_limit(
    client: AsyncClient, limit: str
) -> None:
    response = await client.get("/restocks", params={"limit": limit})
    assert_problem(response, 422, "limit", "query")


@pytest.mark.parametrize(("name", "value"), [("status", "pending"), ("mall", "ebay")])
async def test_list_restocks_unknown_status_or_mall_is_422_naming_it(
    client: AsyncClient, name: str, value: str
) -> None:
    response = await client.get("/restocks", params={name: value})
    assert_problem(response, 422, name, "query")


@pytest.mark.parametrize("cursor", list(GARBAGE_CURSORS.values()), ids=list(GARBAGE_CURSORS))
async def test_list_restocks_forged_cursor_is_422_naming_cursor_in_query(
    client: AsyncClient, cursor: str
) -> None:
    await restored_record(client)
    response = await client.get("/restocks", params={"cursor": cursor})
    assert_problem(response, 422, "cursor", "query")


async def test_list_restocks_cursor_of_the_movements_list_is_422_naming_cursor(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "A", 2)
    movements_cursor = (await get_json(client, "/stock/A/movements", limit=1))["next_cursor"]
    assert movements_cursor

    response = await client.get("/restocks", params={"cursor": movements_cursor})

    assert_problem(response, 422, "cursor", "query")


async def test_list_restocks_cursor_over_512_characters_is_422_naming_cursor(
    client: AsyncClient,
) -> None:
    response = await client.get("/restocks", params={"cursor": "A" * 513})
    assert_problem(response, 422, "cursor", "query")


@pytest.mark.parametrize(
    "position",
    [
        ("yesterday", "x"),
        ("2026-01-01T00:00:00", "x"),
        ("0001-01-01T00:00:00+14:00", "x"),
        ("2026-01-01T00:00:00+00:00", "\ud800"),
    ],
    ids=["not-a-date", "naive-date", "before-year-1-in-utc", "lone-surrogate"],
)
async def test_list_restocks_forged_cursor_with_a_bad_timestamp_is_422_not_500(
    client: AsyncClient, position: tuple[str, str]
) -> None:
    response = await client.get("/restocks", params={"cursor": forge("restocks", *position)})
    assert_problem(response, 422, "cursor", "query")


# --- POST /restocks/{order_no}/resolution ---------------------------------------------


RESOLUTION = {"note": "在庫連携で +2 手動調整済み", "resolved_by": "ops-tanaka"}


@pytest.mark.parametrize("kind", [Code.PRODUCT_NOT_FOUND, Code.MALL_MISMATCH])
async def test_resolution_settles_a_failed_record_and_changes_no_stock(
    client: AsyncClient, db: Database, kind: Code
) -> None:
    order_no = await failed_record(client, kind)
    before = await record(client, order_no)
    stock_before, ledger_before, _ = await books(db)
    sent_at = datetime.now(UTC)

    response = await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == RECORD_KEYS
    assert body["status"] == "resolved"
    assert body["code"] == kind
    assert body["message"] == MESSAGE[kind]
    assert set(body["resolution"]) == {"note", "resolved_by", "resolved_at", "actor"}  # v1.2
    assert body["resolution"]["note"] == RESOLUTION["note"]
    assert body["resolution"]["resolved_by"] == RESOLUTION["resolved_by"]
    resolved_at = at(body["resolution"]["resolved_at"])
    assert sent_at - timedelta(seconds=1) <= resolved_at <= datetime.now(UTC)
    assert resolved_at >= at(before["completed_at"])
    unchanged = {k: v for k, v in body.items() if k not in {"status", "resolution"}}
    assert unchanged == {k: v for k, v in before.items() if k not in {"status", "resolution"}}
    stock_after, ledger_after, _ = await books(db)
    assert (stock_after, ledger_after) == (stock_before, ledger_before)
    assert await quantity(client, "A") == 8


async def test_resolution_is_what_get_restock_shows_afterwards(client: AsyncClient) -> None:
    order_no = await failed_record(client, Code.PRODUCT_NOT_FOUND)

    resolved = (await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)).json()

    got = await record(client, order_no)
    assert got == resolved
    assert got["status"] == "resolved"
    assert got["resolution"]["note"] == RESOLUTION["note"]


async def test_resolution_accepts_the_longest_note_and_name_counted_in_characters(
    client: AsyncClient,
) -> None:
    order_no = await failed_record(client, Code.MALL_MISMATCH)
    note, by = "\u3042" * 1000, "\u3044" * 100  # 3 bytes each in UTF-8

    response = await client.post(
        f"/restocks/{order_no}/resolution", json={"note": note, "resolved_by": by}
    )

    assert response.status_code == 200, response.text
    assert response.json()["resolution"]["note"] == note
    assert (await record(client, order_no))["resolution"]["resolved_by"] == by


async def test_second_resolution_is_409_and_keeps_the_first(
    client: AsyncClient, db: Database
) -> None:
    order_no = await failed_record(client, Code.PRODUCT_NOT_FOUND)
    first = (await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)).json()
    before = await books(db)

    response = await client.post(
        f"/restocks/{order_no}/resolution", json={"note": "again", "resolved_by": "someone"}
    )

    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["status"] == 409
    assert await record(client, order_no) == first
    assert await books(db) == before


async def test_resolution_of_a_restored_record_is_409_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    order_no = await restored_record(client)
    record_before = await record(client, order_no)
    before = await books(db)

    response = await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)

    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert await record(client, order_no) == record_before
    assert record_before["status"] == "restored"
    assert await books(db) == before


async def test_resolution_of_an_order_without_a_record_is_404(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    synced_only = rakuten(7)  # has a sync execution but no restock record
    await sync(client, synced_only, {"A": 1})
    before = await books(db)

    for order_no in (synced_only, rakuten(404)):
        response = await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert await books(db) == before


async def test_restock_after_resolution_answers_previously_failed_and_counts_the_repeat(
    client: AsyncClient, db: Database
) -> None:
    order_no = await failed_record(client, Code.PRODUCT_NOT_FOUND)
    await client.post(f"/restocks/{order_no}/resolution", json=RESOLUTION)
    await put_stock(client, "GONE", 10)  # even with the product back, no automatic retry
    stock_before = await quantities(client, "A", "GONE")

    body = await cancel_ok(client, [order(order_no)])

    result = body["results"][0]
    assert result["code"] == Code.PREVIOUSLY_FAILED
    assert result["outcome"] == "skip"
    assert result["message"] == MESSAGE[Code.PREVIOUSLY_FAILED]
    assert result["items"] == [{"sku": "A", "quantity": 2}, {"sku": "GONE", "quantity": 1}]
    assert await quantities(client, "A", "GONE") == stock_before
    assert await ledger(db, "restock") == []
    assert await repeat_requests(db, order_no) == 1
    got = await record(client, order_no)
    assert (got["status"], got["repeat_requests"]) == ("resolved", 1)
    assert got["resolution"]["note"] == RESOLUTION["note"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"note": "", "resolved_by": "ops"}, "note"),
        ({"note": "x" * 1001, "resolved_by": "ops"}, "note"),
        ({"note": "ok", "resolved_by": ""}, "resolved_by"),
        ({"note": "ok", "resolved_by": "x" * 101}, "resolved_by"),
        ({"note": "a\u0000b", "resolved_by": "ops"}, "note"),
        ({"note": "ok", "resolved_by": "o\u0000ps"}, "resolved_by"),
        ({"note": 5, "resolved_by": "ops"}, "note"),
        ({"note": "ok", "resolved_by": None}, "resolved_by"),
        ({"note": "ok", "resolved_by": "ops", "status": "restored"}, "status"),
        ({"resolved_by": "ops"}, "note"),
        ({"note": "ok"}, "resolved_by"),
    ],
    ids=[
        "empty-note",
        "note-1001",
        "empty-resolved_by",
        "resolved_by-101",
        "nul-in-note",
        "nul-in-resolved_by",
        "note-not-a-string",
        "resolved_by-null",
        "unknown-field",
        "missing-note",
        "missing-resolved_by",
    ],
)
async def test_invalid_resolution_is_422_naming_the_field_and_changes_nothing(
    client: AsyncClient, db: Database, body: Json, field: str
) -> None:
    order_no = await failed_record(client, Code.PRODUCT_NOT_FOUND)
    record_before = await record(client, order_no)
    before = await books(db)

    response = await client.post(f"/restocks/{order_no}/resolution", json=body)

    assert_problem(response, 422, field, "body")
    assert await record(client, order_no) == record_before
    assert record_before["status"] == "failed"
    assert await books(db) == before


async def test_resolution_with_a_body_that_is_not_json_is_422_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    order_no = await failed_record(client, Code.PRODUCT_NOT_FOUND)
    before = await books(db)

    response = await client.post(
        f"/restocks/{order_no}/resolution",
        content=b"{note",
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert await books(db) == before


async def test_resolution_of_a_malformed_order_no_is_422_naming_the_path(
    client: AsyncClient,
) -> None:
    response = await client.post("/restocks/-bad!/resolution", json=RESOLUTION)
    assert_problem(response, 422, "order_no", "path")


# --- POST /stock/{sku}/adjustments ----------------------------------------------------


async def adjust(client: AsyncClient, sku: str, body: Json) -> Response:
    return await client.post(f"/stock/{sku}/adjustments", json=body)


async def test_adjustments_add_and_subtract_and_answer_the_stock(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)

    plus = await adjust(client, "A", {"delta": 5, "reason": "found in the warehouse"})
    minus = await adjust(
        client, "A", {"delta": -3, "reason": "broken", "order_no": "354396-20260525-0000000001"}
    )

    assert plus.status_code == 200, plus.text
    assert minus.status_code == 200, minus.text
    assert set(plus.json()) == {"sku", "quantity", "updated_at"}
    assert (plus.json()["sku"], plus.json()["quantity"]) == ("A", 15)
    assert (minus.json()["sku"], minus.json()["quantity"]) == ("A", 12)
    at(minus.json()["updated_at"])
    assert await get_json(client, "/stock/A") == minus.json()
    assert await quantity(client, "A") == 12


async def test_adjustments_are_ledgered_with_delta_quantity_after_order_no_and_reason_as_note(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = rakuten(1)
    await adjust(client, "A", {"delta": 5, "reason": "found in the warehouse"})
    await adjust(client, "A", {"delta": -3, "reason": "在庫連携で手動調整", "order_no": order_no})

    rows = await movements(client, "A")

    assert [
        (r["reason"], r["delta"], r["quantity_after"], r["order_no"], r["note"]) for r in rows
    ] == [
        ("set", 10, 10, None, None),
        ("adjustment", 5, 15, None, "found in the warehouse"),
        ("adjustment", -3, 12, order_no, "在庫連携で手動調整"),
    ]
    assert await ledger(db, "adjustment") == [("A", 5, None), ("A", -3, order_no)]


async def test_adjustment_accepts_any_well_formed_order_no_of_any_mall(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 0)
    for order_no in (amazon(1), "store-2", "X"):
        response = await adjust(client, "A", {"delta": 1, "reason": "r", "order_no": order_no})
        assert response.status_code == 200, response.text
    assert [r["order_no"] for r in await movements(client, "A")][1:] == [amazon(1), "store-2", "X"]


async def test_adjustment_can_drive_stock_below_zero(client: AsyncClient) -> None:
    await put_stock(client, "A", 2)

    response = await adjust(client, "A", {"delta": -5, "reason": "counted wrong"})

    assert response.status_code == 200, response.text
    assert response.json()["quantity"] == -3
    assert await quantity(client, "A") == -3
    assert (await movements(client, "A"))[-1]["quantity_after"] == -3


@pytest.mark.parametrize("delta", [1_000_000_000, -1_000_000_000, 1, -1])
async def test_adjustment_accepts_delta_bounds(client: AsyncClient, delta: int) -> None:
    await put_stock(client, "A", 7)
    response = await adjust(client, "A", {"delta": delta, "reason": "r"})
    assert response.status_code == 200, response.text
    assert await quantity(client, "A") == 7 + delta


async def test_adjustment_accepts_reason_of_200_characters(client: AsyncClient) -> None:
    await put_stock(client, "A", 0)
    reason = "\u3042" * 200
    response = await adjust(client, "A", {"delta": 1, "reason": reason})
    assert response.status_code == 200, response.text
    assert (await movements(client, "A"))[-1]["note"] == reason


async def test_adjustment_of_an_unknown_sku_is_404_and_registers_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 1)
    before = await books(db)

    response = await adjust(client, "NOPE", {"delta": 5, "reason": "r"})

    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert await quantity(client, "NOPE") is None
    assert await books(db) == before


async def test_adjustment_of_a_removed_sku_is_404_and_writes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 4)
    assert (await client.delete("/stock/A")).status_code == 204
    before = await books(db)

    response = await adjust(client, "A", {"delta": 5, "reason": "r"})

    assert response.status_code == 404, response.text
    assert await books(db) == before


INVALID_ADJUSTMENTS = [
    ({"delta": 0, "reason": "r"}, "delta"),
    ({"delta": 1.5, "reason": "r"}, "delta"),
    ({"delta": 5.0, "reason": "r"}, "delta"),
    ({"delta": "5", "reason": "r"}, "delta"),
    ({"delta": True, "reason": "r"}, "delta"),
    ({"delta": None, "reason": "r"}, "delta"),
    ({"delta": 1_000_000_001, "reason": "r"}, "delta"),
    ({"delta": -1_000_000_001, "reason": "r"}, "delta"),
    ({"delta": 10**30, "reason": "r"}, "delta"),
    ({"reason": "r"}, "delta"),
    ({"delta": 1, "reason": ""}, "reason"),
    ({"delta": 1, "reason": "x" * 201}, "reason"),
    ({"delta": 1, "reason": "a\u0000b"}, "reason"),
    ({"delta": 1, "reason": 7}, "reason"),
    ({"delta": 1}, "reason"),
    ({"delta": 1, "reason": "r", "order_no": "-starts-with-dash"}, "order_no"),
    ({"delta": 1, "reason": "r", "order_no": "has space"}, "order_no"),
    ({"delta": 1, "reason": "r", "order_no": "x" * 65}, "order_no"),
    ({"delta": 1, "reason": "r", "order_no": ""}, "order_no"),
    ({"delta": 1, "reason": "r", "order_no": 354396}, "order_no"),
    ({"delta": 1, "reason": "r", "sku": "A"}, "sku"),
]


@pytest.mark.parametrize(
    ("body", "field"),
    INVALID_ADJUSTMENTS,
    ids=[
        "delta-0",
        "delta-1.5",
        "delta-5.0",
        "delta-string",
        "delta-true",
        "delta-null",
        "delta-1000000001",
        "delta--1000000001",
        "delta-huge",
        "delta-missing",
        "reason-empty",
        "reason-201",
        "reason-nul",
        "reason-number",
        "reason-missing",
        "order_no-dash",
        "order_no-space",
        "order_no-65",
        "order_no-empty",
        "order_no-number",
        "unknown-field",
    ],
)
async def test_invalid_adjustment_is_422_naming_the_field_and_changes_nothing(
    client: AsyncClient, db: Database, body: Json, field: str
) -> None:
    await put_stock(client, "A", 10)
    before = await books(db)

    response = await adjust(client, "A", body)

    assert_problem(response, 422, field, "body")
    assert await books(db) == before
    assert await quantity(client, "A") == 10


async def test_invalid_adjustment_of_an_unknown_sku_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    before = await books(db)
    response = await adjust(client, "NOPE", {"delta": 0, "reason": "r"})
    assert response.status_code in (404, 422)
    assert await books(db) == before


# --- GET /stock/{sku}/movements -------------------------------------------------------


async def full_history(client: AsyncClient) -> str:
    """Sku A through every kind of ledger row, with B's rows interleaved; returns the order."""
    await put_stock(client, "A", 10)  # set +10 → 10
    await put_stock(client, "B", 5)
    order_no = rakuten(1)
    await sync(client, order_no, {"A": 3, "B": 1})  # sync_execution -3 → 7
    await cancel_ok(client, [order(order_no)])  # restock +3 → 10
    await adjust(client, "A", {"delta": -4, "reason": "broken"})  # adjustment -4 → 6
    await put_stock(client, "A", 20)  # set +14 → 20
    await adjust(client, "B", {"delta": 2, "reason": "b"})
    assert (await client.delete("/stock/A")).status_code == 204  # delete -20 → 0
    return order_no


async def test_movements_list_every_kind_of_change_oldest_first_with_a_running_total(
    client: AsyncClient,
) -> None:
    order_no = await full_history(client)

    rows = await movements(client, "A")

    assert [
        (r["reason"], r["delta"], r["quantity_after"], r["order_no"], r["note"]) for r in rows
    ] == [
        ("set", 10, 10, None, None),
        ("sync_execution", -3, 7, order_no, None),
        ("restock", 3, 10, order_no, None),
        ("adjustment", -4, 6, None, "broken"),
        ("set", 14, 20, None, None),
        ("delete", -20, 0, None, None),
    ]
    assert all(set(r) == MOVEMENT_KEYS for r in rows)
    assert all(r["sku"] == "A" for r in rows)
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [at(r["at"]) for r in rows]
    assert times == sorted(times)
    running = 0
    for r in rows:
        running += r["delta"]
        assert r["quantity_after"] == running


async def test_movements_of_a_removed_sku_still_answer_its_history(client: AsyncClient) -> None:
    await put_stock(client, "GONE", 3)
    assert (await client.delete("/stock/GONE")).status_code == 204
    assert await quantity(client, "GONE") is None

    rows = await movements(client, "GONE")

    assert [(r["reason"], r["delta"], r["quantity_after"]) for r in rows] == [
        ("set", 3, 3),
        ("delete", -3, 0),
    ]


async def test_removal_of_oversold_stock_writes_minus_its_negative_quantity(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    await adjust(client, "A", {"delta": -4, "reason": "oversold"})
    assert (await client.delete("/stock/A")).status_code == 204

    last = (await movements(client, "A"))[-1]

    assert (last["reason"], last["delta"], last["quantity_after"]) == ("delete", 3, 0)


async def test_movements_continue_after_a_sku_is_registered_again(client: AsyncClient) -> None:
    await put_stock(client, "A", 3)
    assert (await client.delete("/stock/A")).status_code == 204
    await put_stock(client, "A", 8)

    rows = await movements(client, "A")

    assert [(r["reason"], r["delta"], r["quantity_after"]) for r in rows] == [
        ("set", 3, 3),
        ("delete", -3, 0),
        ("set", 8, 8),
    ]


async def test_movements_pages_of_two_neither_repeat_nor_skip(client: AsyncClient) -> None:
    await full_history(client)
    await put_stock(client, "A", 1)  # 7 rows: the last page is a short one
    everything = await movements(client, "A")

    pages = await all_pages(client, "/stock/A/movements", limit=2)

    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert [r for page in pages for r in page] == everything
    assert len(everything) == 7


async def test_movements_last_page_that_exactly_fills_the_limit_has_a_null_cursor(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "A", 2)

    pages = await all_pages(client, "/stock/A/movements", limit=1)
    whole = await get_json(client, "/stock/A/movements", limit=2)

    assert [len(p) for p in pages] == [1, 1]
    assert whole["next_cursor"] is None


async def test_movements_of_a_sku_that_never_existed_is_404(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    response = await client.get("/stock/NEVER/movements")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


async def test_movements_of_a_sku_that_never_existed_is_404_also_with_a_cursor(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "A", 2)
    cursor = (await get_json(client, "/stock/A/movements", limit=1))["next_cursor"]

    response = await client.get("/stock/NEVER/movements", params={"cursor": cursor})

    assert response.status_code == 404, response.text


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_movements_limit_outside_1_to_500_is_422_naming_limit(
    client: AsyncClient, limit: str
) -> None:
    await put_stock(client, "A", 1)
    response = await client.get("/stock/A/movements", params={"limit": limit})
    assert_problem(response, 422, "limit", "query")


async def test_movements_default_limit_is_100(client: AsyncClient) -> None:
    await put_stock(client, "A", 0)
    for _ in range(50):
        await adjust(client, "A", {"delta": 1, "reason": "+"})
        await adjust(client, "A", {"delta": -1, "reason": "-"})

    first = await get_json(client, "/stock/A/movements")
    second = await get_json(client, "/stock/A/movements", cursor=first["next_cursor"])

    assert len(first["items"]) == 100
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None


async def test_movements_forged_cursors_are_422_naming_cursor(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "R", 10)
    order_no = rakuten(1)
    await sync(client, order_no, {"R": 1})
    await cancel_ok(client, [order(order_no)])
    await restored_record(client, 2)
    restocks_cursor = (await get_json(client, "/restocks", limit=1))["next_cursor"]
    changes_cursor = (await get_json(client, "/stock-changes"))["next_cursor"]
    forged = [
        *GARBAGE_CURSORS.values(),
        restocks_cursor,
        changes_cursor,
        forge("movements", "1"),
        forge("movements", 1.5),
        forge("movements", 1, 2),
    ]

    for cursor in forged:
        response = await client.get("/stock/A/movements", params={"cursor": cursor})
        assert_problem(response, 422, "cursor", "query")


async def test_movements_forged_cursor_beyond_64_bits_is_422_not_500(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    response = await client.get("/stock/A/movements", params={"cursor": forge("movements", 2**63)})
    assert_problem(response, 422, "cursor", "query")


# --- GET /stock-changes ---------------------------------------------------------------


async def changes(client: AsyncClient, after: str | None = None, limit: int = 500) -> Json:
    params: Json = {"limit": limit}
    if after is not None:
        params["after"] = after
    body = await get_json(client, "/stock-changes", **params)
    assert set(body) == {"items", "next_cursor"}
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    for item in body["items"]:
        assert set(item) == CHANGE_KEYS
        at(item["changed_at"])
    return body


def by_sku(items: list[Json]) -> dict[str, tuple[int, bool]]:
    skus = [i["sku"] for i in items]
    assert len(skus) == len(set(skus)), f"a sku listed twice: {skus}"
    return {i["sku"]: (i["quantity"], i["deleted"]) for i in items}


async def test_stock_changes_from_the_beginning_list_each_sku_once_with_its_current_quantity(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 5)
    await put_stock(client, "C", 1)
    await adjust(client, "A", {"delta": 3, "reason": "r"})
    await sync(client, rakuten(1), {"A": 2, "B": 5})
    await put_stock(client, "A", 40)
    assert (await client.delete("/stock/C")).status_code == 204

    body = await changes(client)

    assert by_sku(body["items"]) == {"A": (40, False), "B": (0, False), "C": (0, True)}


async def test_stock_changes_without_limit_default_to_a_page(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    body = await get_json(client, "/stock-changes")
    assert by_sku(body["items"]) == {"A": (1, False)}


async def test_stock_changes_on_an_empty_database_are_empty_with_a_usable_cursor(
    client: AsyncClient,
) -> None:
    first = await changes(client)
    assert first["items"] == []

    await put_stock(client, "A", 2)
    after = await changes(client, first["next_cursor"])

    assert by_sku(after["items"]) == {"A": (2, False)}


async def test_stock_changes_changed_at_is_the_time_of_the_skus_latest_movement(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 1)
    await adjust(client, "A", {"delta": 1, "reason": "r"})

    items = {i["sku"]: i for i in (await changes(client))["items"]}

    for sku in ("A", "B"):
        assert at(items[sku]["changed_at"]) == at((await movements(client, sku))[-1]["at"])


async def _restock_of_a(client: AsyncClient) -> None:
    await cancel_ok(client, [order(rakuten(1))])


async def _adjustment_of_b(client: AsyncClient) -> None:
    await adjust(client, "B", {"delta": 5, "reason": "r"})


async def _set_of_b(client: AsyncClient) -> None:
    await put_stock(client, "B", 7)


async def _sync_execution_of_b(client: AsyncClient) -> None:
    await sync(client, rakuten(2), {"B": 3})


async def _removal_of_c(client: AsyncClient) -> None:
    assert (await client.delete("/stock/C")).status_code == 204


async def _registration_of_d(client: AsyncClient) -> None:
    await put_stock(client, "D", 4)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (_restock_of_a, {"A": (10, False)}),
        (_adjustment_of_b, {"B": (15, False)}),
        (_set_of_b, {"B": (7, False)}),
        (_sync_execution_of_b, {"B": (7, False)}),
        (_removal_of_c, {"C": (0, True)}),
        (_registration_of_d, {"D": (4, False)}),
    ],
    ids=["restock", "adjustment", "set", "sync_execution", "delete", "new-sku"],
)
async def test_stock_changes_after_the_cursor_list_exactly_the_sku_one_write_changed(
    client: AsyncClient, write: Any, expected: dict[str, tuple[int, bool]]
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await put_stock(client, "C", 10)
    await sync(client, rakuten(1), {"A": 2})  # A 8, ready to be restored
    cursor = (await changes(client))["next_cursor"]
    assert (await changes(client, cursor))["items"] == []

    await write(client)
    body = await changes(client, cursor)

    assert by_sku(body["items"]) == expected
    assert (await changes(client, body["next_cursor"]))["items"] == []


async def test_stock_changes_write_that_changes_nothing_is_not_listed(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    cursor = (await changes(client))["next_cursor"]

    rejected = await adjust(client, "A", {"delta": 0, "reason": "r"})
    missing = await adjust(client, "NOPE", {"delta": 1, "reason": "r"})

    assert (rejected.status_code, missing.status_code) == (422, 404)
    assert (await changes(client, cursor))["items"] == []


async def test_stock_changes_empty_read_returns_a_cursor_usable_again(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    cursor = (await changes(client))["next_cursor"]

    empty = await changes(client, cursor)
    again = await changes(client, empty["next_cursor"])
    await put_stock(client, "B", 2)
    later = await changes(client, again["next_cursor"])

    assert empty["items"] == []
    assert again["items"] == []
    assert by_sku(later["items"]) == {"B": (2, False)}


async def test_stock_changes_several_writes_after_the_cursor_list_each_sku_once(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await put_stock(client, "C", 10)
    cursor = (await changes(client))["next_cursor"]

    await adjust(client, "A", {"delta": 1, "reason": "r"})
    await adjust(client, "B", {"delta": -1, "reason": "r"})
    await adjust(client, "A", {"delta": 1, "reason": "r"})
    await put_stock(client, "A", 3)

    assert by_sku((await changes(client, cursor))["items"]) == {"A": (3, False), "B": (9, False)}


async def test_stock_changes_limit_caps_skus_per_page_and_pages_list_every_sku_once(
    client: AsyncClient,
) -> None:
    skus = [f"SKU-{i:02d}" for i in range(7)]
    for i, sku in enumerate(skus):  # each sku's ledger rows one after another
        await put_stock(client, sku, i + 1)
        await adjust(client, sku, {"delta": 1, "reason": "r"})
        await adjust(client, sku, {"delta": -1, "reason": "r"})
        if sku == "SKU-03":
            assert (await client.delete("/stock/SKU-03")).status_code == 204

    seen: list[Json] = []
    sizes = []
    cursor = None
    for _ in range(20):
        body = await changes(client, cursor, limit=3)
        if not body["items"]:
            break
        sizes.append(len(body["items"]))
        seen.extend(body["items"])
        cursor = body["next_cursor"]

    assert all(size <= 3 for size in sizes)
    assert sizes[0] == 3
    expected = {sku: (i + 1, False) for i, sku in enumerate(skus)}
    expected["SKU-03"] = (0, True)
    assert by_sku(seen) == expected


async def test_stock_changes_pages_list_a_sku_once_even_when_its_history_interleaves(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "B", 1)
    await put_stock(client, "A", 2)

    seen: list[Json] = []
    cursor = None
    for _ in range(10):
        body = await changes(client, cursor, limit=1)
        if not body["items"]:
            break
        seen.extend(body["items"])
        cursor = body["next_cursor"]

    assert by_sku(seen) == {"A": (2, False), "B": (1, False)}


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_stock_changes_limit_outside_1_to_500_is_422_naming_limit(
    client: AsyncClient, limit: str
) -> None:
    response = await client.get("/stock-changes", params={"limit": limit})
    assert_problem(response, 422, "limit", "query")


async def test_stock_changes_bad_after_is_422_naming_after(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    await put_stock(client, "A", 2)
    movements_cursor = (await get_json(client, "/stock/A/movements", limit=1))["next_cursor"]
    forged = [
        *GARBAGE_CURSORS.values(),
        movements_cursor,
        forge("changes", 1),
        forge("changes", "0", "3"),
        forge("restocks", 0, 3),
        "A" * 513,
    ]

    for after in forged:
        response = await client.get("/stock-changes", params={"after": after})
        assert_problem(response, 422, "after", "query")


async def test_stock_changes_after_beyond_64_bits_is_422_not_500(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    response = await client.get("/stock-changes", params={"after": forge("changes", 2**63, 0)})
    assert_problem(response, 422, "after", "query")


# --- GET /metrics ---------------------------------------------------------------------


async def metrics_text(client: AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name_and_labels: str) -> float | None:
    """The value of one sample line, or None when there is no such line."""
    for line in text.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_are_prometheus_text(client: AsyncClient) -> None:
    text = await metrics_text(client)

    assert "# TYPE restock_orders_total counter" in text
    assert "# TYPE restock_http_request_duration_seconds histogram" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) >= 2, line


async def test_metrics_count_restock_orders_by_code_and_mall(client: AsyncClient) -> None:
    order_no = await restored_record(client, 1)
    await failed_record(client, Code.PRODUCT_NOT_FOUND, 2)
    await cancel_ok(client, [order(order_no)])  # already_restored
    await cancel_ok(client, [order(rakuten(3), False)])  # mall_cancel_failed

    text = await metrics_text(client)

    assert 'restock_orders_total{code="restored",mall="rakuten"} 1.0' in text.splitlines()
    assert sample(text, 'restock_orders_total{code="product_not_found",mall="rakuten"}') == 1
    assert sample(text, 'restock_orders_total{code="already_restored",mall="rakuten"}') == 1
    assert sample(text, 'restock_orders_total{code="mall_cancel_failed",mall="rakuten"}') == 1
    assert sample(text, 'restock_orders_total{code="restored",mall="amazon"}') is None


async def test_metrics_time_requests_by_route_template(client: AsyncClient) -> None:
    await restored_record(client)
    await client.get("/stock/R")
    await client.get("/stock/R/movements")

    text = await metrics_text(client)

    post = 'method="POST",route="/restocks"'
    assert sample(text, f"restock_http_request_duration_seconds_count{{{post}}}") == 1
    assert sample(text, f'restock_http_request_duration_seconds_bucket{{le="+Inf",{post}}}') == 1
    assert sample(text, f"restock_http_request_duration_seconds_sum{{{post}}}") is not None
    get_stock = 'method="GET",route="/stock/{sku}"'
    assert sample(text, f"restock_http_request_duration_seconds_count{{{get_stock}}}") == 1
    movements_route = 'method="GET",route="/stock/{sku}/movements"'
    assert sample(text, f"restock_http_request_duration_seconds_count{{{movements_route}}}") == 1
    assert 'route="/stock/R"' not in text  # templates, not one series per sku


async def test_metrics_count_requests_by_status(client: AsyncClient) -> None:
    await client.get(f"/restocks/{rakuten(404)}")
    await client.get("/restocks", params={"limit": "0"})

    text = await metrics_text(client)

    assert (
        sample(
            text,
            'restock_http_requests_total{method="GET",route="/restocks/{order_no}",status="404"}',
        )
        == 1
    )
    assert (
        sample(text, 'restock_http_requests_total{method="GET",route="/restocks",status="422"}')
        == 1
    )


async def test_metrics_show_the_connection_pool(
    client: AsyncClient, db: Database, backend: str
) -> None:
    await put_stock(client, "A", 1)

    text = await metrics_text(client)

    for gauge in (
        "restock_db_pool_size",
        "restock_db_pool_checked_out",
        "restock_db_pool_checked_in",
    ):
        assert f"# TYPE {gauge} gauge" in text
        assert sample(text, gauge) is not None
    size = sample(text, "restock_db_pool_size")
    assert size is not None and size >= 1
    assert sample(text, "restock_db_pool_checked_out") == 0  # between requests
    assert sample(text, "restock_db_pool_checked_in") == size


async def test_pool_gauges_follow_the_pool_through_concurrent_calls_and_lost_connections(
    pg_database_url: str,
) -> None:
    """The gauges count changes (opened, closed, taken, given back): they must end where
    asyncpg's own count of its pool is, also after PostgreSQL dropped every connection."""
    app = create_app(Settings(database_url=pg_database_url))
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        pool = await app.state.store.pool()

        async def agree() -> None:
            text = await metrics_text(client)
            size, idle = pool.get_size(), pool.get_idle_size()
            assert sample(text, "restock_db_pool_size") == size
            assert sample(text, "restock_db_pool_checked_out") == size - idle
            assert sample(text, "restock_db_pool_checked_in") == idle

        await asyncio.gather(*(client.get(f"/stock/POOL-{n}") for n in range(40)))
        await agree()
        assert pool.get_size() > 1

        dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'restock-service'"
            )
        finally:
            await admin.close()
        for n in range(5):  # the first may meet a dead connection (503); the rest reconnect
            await client.get(f"/stock/POOL-{n}")
        for _ in range(50):
            try:
                await agree()
                break
            except AssertionError:
                await asyncio.sleep(0.1)
        await agree()
