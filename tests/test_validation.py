"""Invalid requests answer 422 with an RFC 9457 problem naming each offending field, and
change nothing: no stock, no ledger row, no restock record, no sync execution.

The books are seeded so that the valid part of each bad request *would* change something
(an order ready to be restored, an order already restored whose repeat would be counted).
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest
from httpx import AsyncClient, Response

from restock_service.tables import restocks, stock_movements, sync_executions
from tests.helpers import (
    Database,
    amazon,
    cancel_ok,
    count_rows,
    order,
    put_stock,
    quantities,
    quantity,
    rakuten,
    repeat_requests,
    sync,
)

PROBLEM_JSON = "application/problem+json"
SKUS = ("TSHIRT-RED-M", "CAP-01", "SOCKS-3P")
RESTORED_BEFORE = rakuten(1)  # restored while seeding: a repeat would be counted
RESTORABLE = {"rakuten": rakuten(2), "amazon": amazon(2), "yahoo": "store-2"}
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def no_server_errors(client: AsyncClient) -> None:
    """Fail any test in this file whose requests get a 5xx, whatever it asserts itself."""

    async def check(response: Response) -> None:
        assert response.status_code < 500, (
            f"{response.request.method} {response.request.url} -> {response.status_code}"
        )

    client.event_hooks["response"].append(check)


@pytest.fixture
async def seeded(client: AsyncClient) -> AsyncIterator[None]:
    """Stock, one sync execution per mall ready to be restored, and one order restored."""
    await put_stock(client, "TSHIRT-RED-M", 10)
    await put_stock(client, "CAP-01", 5)
    await put_stock(client, "SOCKS-3P", 0)
    await sync(client, RESTORED_BEFORE, {"TSHIRT-RED-M": 1})
    await cancel_ok(client, [order(RESTORED_BEFORE)])
    await sync(client, RESTORABLE["rakuten"], {"TSHIRT-RED-M": 2, "CAP-01": 1})
    await sync(client, RESTORABLE["amazon"], {"CAP-01": 2}, mall="amazon")
    await sync(client, RESTORABLE["yahoo"], {"TSHIRT-RED-M": 3}, mall="yahoo")
    yield


async def books(client: AsyncClient, db: Database) -> Json:
    """Everything a bad request must leave alone."""
    return {
        "stock": await quantities(client, *SKUS),
        "restocks": await count_rows(db, restocks),
        "stock_movements": await count_rows(db, stock_movements),
        "sync_executions": await count_rows(db, sync_executions),
        "repeats": await repeat_requests(db, RESTORED_BEFORE),
    }


def assert_problem(response: Response, fields: list[str]) -> Json:
    """A 422 problem document whose errors name exactly ``fields``, in order."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: Json = response.json()
    assert body["status"] == 422
    assert isinstance(body["type"], str)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert [e["field"] for e in body["errors"]] == fields, body
    for error in body["errors"]:
        assert {"field", "location", "message", "type"} <= error.keys()
        assert set(error) <= {"field", "location", "message", "type", "input"}
        assert error["message"]
        assert error["type"]
    return body


async def assert_rejected_without_change(
    client: AsyncClient,
    db: Database,
    send: Callable[[], Awaitable[Response]],
    fields: list[str],
) -> Json:
    before = await books(client, db)
    body = assert_problem(await send(), fields)
    assert await books(client, db) == before
    return body


# --- POST /restocks ---------------------------------------------------------------------


def restock_body(mall: str = "rakuten", *more: Json) -> Json:
    """A valid batch for ``mall``: its restorable order, then ``more`` orders."""
    orders = [order(RESTORABLE[mall])]
    if mall == "rakuten":
        orders.append(order(RESTORED_BEFORE))
    return {"mall": mall, "restore_stock": True, "orders": [*orders, *more]}


def without(body: Json, key: str) -> Json:
    return {k: v for k, v in body.items() if k != key}


def with_order_no(mall: str, order_no: str) -> Json:
    """A valid ``mall`` batch whose order at index 1 has ``order_no``."""
    return {
        "mall": mall,
        "restore_stock": True,
        "orders": [order(RESTORABLE[mall]), order(order_no), order(RESTORED_BEFORE)]
        if mall == "rakuten"
        else [order(RESTORABLE[mall]), order(order_no)],
    }


BAD_RESTOCK_BODIES: dict[str, tuple[Json | list[Any], list[str]]] = {
    "mall_outside_the_three": ({**restock_body(), "mall": "ebay"}, ["mall"]),
    "mall_in_capitals": ({**restock_body(), "mall": "Rakuten"}, ["mall"]),
    "mall_missing": (without(restock_body(), "mall"), ["mall"]),
    "mall_null": ({**restock_body(), "mall": None}, ["mall"]),
    "rakuten_order_no_of_amazon_shape": (
        with_order_no("rakuten", amazon(3)),
        ["orders[1].order_no"],
    ),
    "rakuten_order_no_short": (
        with_order_no("rakuten", "354396-20260525-003632979"),
        ["orders[1].order_no"],
    ),
    "rakuten_order_no_with_fullwidth_digit": (
        with_order_no("rakuten", "354396-20260525-003632979\uff13"),
        ["orders[1].order_no"],
    ),
    "rakuten_order_no_with_trailing_newline": (
        with_order_no("rakuten", rakuten(3) + "\n"),
        ["orders[1].order_no"],
    ),
    "amazon_order_no_of_rakuten_shape": (
        with_order_no("amazon", rakuten(3)),
        ["orders[1].order_no"],
    ),
    "amazon_order_no_generic": (with_order_no("amazon", "store-3"), ["orders[1].order_no"]),
    "empty_orders": ({**restock_body(), "orders": []}, ["orders"]),
    "orders_missing": (without(restock_body(), "orders"), ["orders"]),
    "orders_not_a_list": ({**restock_body(), "orders": order(rakuten(3))}, ["orders"]),
    "1001_orders": (
        {**restock_body(), "orders": [order(rakuten(100 + i)) for i in range(1001)]},
        ["orders"],
    ),
    "repeated_order_no": (
        restock_body("rakuten", order(RESTORABLE["rakuten"])),
        ["orders[2].order_no"],
    ),
    "repeated_order_no_with_other_outcome": (
        restock_body("rakuten", order(RESTORED_BEFORE, succeeded=False)),
        ["orders[2].order_no"],
    ),
    "restore_stock_missing": (without(restock_body(), "restore_stock"), ["restore_stock"]),
    "restore_stock_string_true": ({**restock_body(), "restore_stock": "true"}, ["restore_stock"]),
    "restore_stock_one": ({**restock_body(), "restore_stock": 1}, ["restore_stock"]),
    "restore_stock_null": ({**restock_body(), "restore_stock": None}, ["restore_stock"]),
    "mall_cancel_succeeded_missing": (
        restock_body("rakuten", {"order_no": rakuten(3)}),
        ["orders[2].mall_cancel_succeeded"],
    ),
    "mall_cancel_succeeded_string": (
        restock_body("rakuten", {"order_no": rakuten(3), "mall_cancel_succeeded": "false"}),
        ["orders[2].mall_cancel_succeeded"],
    ),
    "mall_cancel_succeeded_zero": (
        restock_body("rakuten", {"order_no": rakuten(3), "mall_cancel_succeeded": 0}),
        ["orders[2].mall_cancel_succeeded"],
    ),
    "order_no_missing": (
        restock_body("rakuten", {"mall_cancel_succeeded": True}),
        ["orders[2].order_no"],
    ),
    "order_no_number": (
        restock_body("rakuten", {"order_no": 354396, "mall_cancel_succeeded": True}),
        ["orders[2].order_no"],
    ),
    "unknown_top_level_field": ({**restock_body(), "dry_run": True}, ["dry_run"]),
    "unknown_field_in_an_order": (
        restock_body("rakuten", {**order(rakuten(3)), "items": [{"sku": "CAP-01", "quantity": 9}]}),
        ["orders[2].items"],
    ),
    "mall_cancel_message_1001_chars": (
        restock_body("rakuten", order(rakuten(3), succeeded=False, message="あ" * 1001)),
        ["orders[2].mall_cancel_message"],
    ),
    "mall_cancel_message_not_text": (
        restock_body("rakuten", {**order(rakuten(3)), "mall_cancel_message": ["x"]}),
        ["orders[2].mall_cancel_message"],
    ),
    "body_is_a_json_array": ([restock_body()], ["body"]),
    "body_is_a_json_string": ("rakuten", ["body"]),
    "order_no_with_newline": (with_order_no("yahoo", "store\n3"), ["orders[1].order_no"]),
    "order_no_with_nul": (with_order_no("yahoo", "store\x003"), ["orders[1].order_no"]),
    "order_no_with_tab": (with_order_no("yahoo", "store\t3"), ["orders[1].order_no"]),
    "order_no_sql_injection": (
        with_order_no("yahoo", "1'; DROP TABLE restocks; --"),
        ["orders[1].order_no"],
    ),
    "order_no_sql_injection_or": (with_order_no("yahoo", "x' OR '1'='1"), ["orders[1].order_no"]),
    "order_no_65_chars": (with_order_no("yahoo", "A" * 65), ["orders[1].order_no"]),
    "order_no_empty": (with_order_no("yahoo", ""), ["orders[1].order_no"]),
    "order_no_starting_with_dash": (with_order_no("yahoo", "-store-3"), ["orders[1].order_no"]),
    "order_no_non_ascii": (with_order_no("yahoo", "注文3"), ["orders[1].order_no"]),
    "errors_in_several_places": (
        {
            "mall": "rakuten",
            "restore_stock": "yes",
            "orders": [order(RESTORABLE["rakuten"]), {"order_no": "", "extra": 1}],
        },
        [
            "restore_stock",
            "orders[1].order_no",
            "orders[1].mall_cancel_succeeded",
            "orders[1].extra",
        ],
    ),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("body", "fields"), BAD_RESTOCK_BODIES.values(), ids=list(BAD_RESTOCK_BODIES)
)
async def test_invalid_restock_batch_is_rejected_naming_the_field_and_changes_nothing(
    client: AsyncClient, db: Database, body: Json | list[Any], fields: list[str]
) -> None:
    await assert_rejected_without_change(
        client, db, lambda: client.post("/restocks", json=body), fields
    )
    # The valid orders of the rejected batch are still there to be restored.
    assert (await client.get(f"/restocks/{RESTORABLE['rakuten']}")).status_code == 404


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    "content",
    [b'{"mall": "rakuten", ', b"", b"{'mall': 'rakuten'}", b"\xff\xfe{}", b"nul"],
    ids=["truncated", "empty", "single_quotes", "not_utf8", "bad_literal"],
)
async def test_broken_json_is_rejected_as_the_body_and_changes_nothing(
    client: AsyncClient, db: Database, content: bytes
) -> None:
    await assert_rejected_without_change(
        client,
        db,
        lambda: client.post(
            "/restocks", content=content, headers={"content-type": "application/json"}
        ),
        ["body"],
    )


@pytest.mark.usefixtures("seeded")
async def test_repeated_order_no_is_reported_as_a_duplicate_with_its_value(
    client: AsyncClient, db: Database
) -> None:
    body = await assert_rejected_without_change(
        client,
        db,
        lambda: client.post("/restocks", json=restock_body("rakuten", order(RESTORED_BEFORE))),
        ["orders[2].order_no"],
    )
    assert body["errors"][0]["type"] == "duplicate"
    assert body["errors"][0]["input"] == RESTORED_BEFORE
    assert body["errors"][0]["location"] == "body"


@pytest.mark.usefixtures("seeded")
async def test_wrong_shape_order_no_echoes_the_value_sent(
    client: AsyncClient, db: Database
) -> None:
    body = await assert_rejected_without_change(
        client,
        db,
        lambda: client.post("/restocks", json=with_order_no("rakuten", amazon(3))),
        ["orders[1].order_no"],
    )
    assert body["errors"][0]["input"] == amazon(3)
    assert body["errors"][0]["location"] == "body"


@pytest.mark.usefixtures("seeded")
async def test_batch_with_restore_stock_false_is_still_validated(
    client: AsyncClient, db: Database
) -> None:
    bad = {**with_order_no("rakuten", amazon(3)), "restore_stock": False}
    await assert_rejected_without_change(
        client, db, lambda: client.post("/restocks", json=bad), ["orders[1].order_no"]
    )


@pytest.mark.usefixtures("seeded")
async def test_sql_injection_order_no_leaves_the_tables_intact(
    client: AsyncClient, db: Database
) -> None:
    await assert_rejected_without_change(
        client,
        db,
        lambda: client.post("/restocks", json=with_order_no("yahoo", "1'); DELETE FROM stock; --")),
        ["orders[1].order_no"],
    )
    assert await quantities(client, *SKUS) == {"TSHIRT-RED-M": 5, "CAP-01": 2, "SOCKS-3P": 0}


# The accepted edges of the same rules, so the rejections above are not over-broad.


@pytest.mark.usefixtures("seeded")
async def test_yahoo_accepts_a_generic_order_no_of_64_characters(client: AsyncClient) -> None:
    body = await cancel_ok(
        client, [order(RESTORABLE["yahoo"]), order("Y" + "a_-9" * 15 + "zzz")], mall="yahoo"
    )
    assert [r["order_no"] for r in body["results"]] == [
        RESTORABLE["yahoo"],
        "Y" + "a_-9" * 15 + "zzz",
    ]
    assert len(body["results"][1]["order_no"]) == 64


async def test_mall_cancel_message_of_1000_characters_is_accepted(client: AsyncClient) -> None:
    await cancel_ok(client, [order(rakuten(3), succeeded=False, message="あ" * 1000)])


async def test_batch_of_1000_orders_is_accepted(client: AsyncClient) -> None:
    body = await cancel_ok(client, [order(rakuten(i)) for i in range(1000)])
    assert len(body["results"]) == 1000


# --- PUT /stock/{sku} -------------------------------------------------------------------

BAD_STOCK_BODIES: dict[str, tuple[Any, list[str]]] = {
    "negative": ({"quantity": -1}, ["quantity"]),
    "over_one_billion": ({"quantity": 1_000_000_001}, ["quantity"]),
    "beyond_64_bits": ({"quantity": 2**64}, ["quantity"]),
    "fraction": ({"quantity": 1.5}, ["quantity"]),
    "whole_float": ({"quantity": 5.0}, ["quantity"]),
    "string": ({"quantity": "5"}, ["quantity"]),
    "boolean": ({"quantity": True}, ["quantity"]),
    "null": ({"quantity": None}, ["quantity"]),
    "missing": ({}, ["quantity"]),
    "extra_field": ({"quantity": 5, "note": "recount"}, ["note"]),
    "array": ([{"quantity": 5}], ["body"]),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("sku", ["CAP-01", "NEW-SKU"], ids=["registered", "unregistered"])
@pytest.mark.parametrize(("body", "fields"), BAD_STOCK_BODIES.values(), ids=list(BAD_STOCK_BODIES))
async def test_invalid_stock_quantity_is_rejected_and_changes_nothing(
    client: AsyncClient, db: Database, sku: str, body: Any, fields: list[str]
) -> None:
    await assert_rejected_without_change(
        client, db, lambda: client.put(f"/stock/{sku}", json=body), fields
    )
    assert await quantity(client, "NEW-SKU") is None


BAD_SKUS = {
    "space": "A%20B",
    "percent": "A%25B",
    "hash": "A%23B",
    "question_mark": "A%3FB",
    "non_ascii": quote("CAPé"),
    "tab": "A%09B",
    "del": "A%7FB",
    "65_chars": "S" * 65,
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("path_sku", BAD_SKUS.values(), ids=list(BAD_SKUS))
async def test_sku_path_with_a_disallowed_character_or_length_is_rejected(
    client: AsyncClient, db: Database, path_sku: str
) -> None:
    body = await assert_rejected_without_change(
        client, db, lambda: client.put(f"/stock/{path_sku}", json={"quantity": 5}), ["sku"]
    )
    assert body["errors"][0]["location"] == "path"


# --- POST /sync-executions --------------------------------------------------------------

SYNC_ORDER = rakuten(50)


def sync_body(*lines: tuple[str, int], **fields: Any) -> Json:
    items = [{"sku": s, "quantity": q} for s, q in (lines or [("TSHIRT-RED-M", 1), ("CAP-01", 1)])]
    return {"order_no": SYNC_ORDER, "mall": "rakuten", "items": items, **fields}


async def assert_no_sync_execution(client: AsyncClient, order_no: str = SYNC_ORDER) -> None:
    assert (await client.get(f"/sync-executions/{order_no}")).status_code == 404


@pytest.mark.usefixtures("seeded")
async def test_unregistered_sku_rejects_the_whole_execution_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    request = sync_body(("TSHIRT-RED-M", 2), ("NOT-REGISTERED", 1), ("CAP-01", 1))
    body = await assert_rejected_without_change(
        client, db, lambda: client.post("/sync-executions", json=request), ["items[1].sku"]
    )
    assert body["errors"][0]["input"] == "NOT-REGISTERED"
    await assert_no_sync_execution(client)


@pytest.mark.usefixtures("seeded")
async def test_every_unregistered_sku_of_an_execution_is_named(
    client: AsyncClient, db: Database
) -> None:
    request = sync_body(("GONE-1", 1), ("CAP-01", 1), ("GONE-2", 1))
    await assert_rejected_without_change(
        client,
        db,
        lambda: client.post("/sync-executions", json=request),
        ["items[0].sku", "items[2].sku"],
    )
    await assert_no_sync_execution(client)


@pytest.mark.usefixtures("seeded")
async def test_deleted_sku_counts_as_unregistered_for_a_sync_execution(
    client: AsyncClient, db: Database
) -> None:
    assert (await client.delete("/stock/SOCKS-3P")).status_code == 204
    request = sync_body(("CAP-01", 1), ("SOCKS-3P", 1))
    await assert_rejected_without_change(
        client, db, lambda: client.post("/sync-executions", json=request), ["items[1].sku"]
    )
    await assert_no_sync_execution(client)


@pytest.mark.usefixtures("seeded")
async def test_rejected_execution_does_not_block_a_later_valid_one(
    client: AsyncClient, db: Database
) -> None:
    bad = sync_body(("CAP-01", 1), ("NOT-REGISTERED", 1))
    assert (await client.post("/sync-executions", json=bad)).status_code == 422
    response = await client.post("/sync-executions", json=sync_body(("CAP-01", 1)))
    assert response.status_code == 201, response.text
    assert await quantity(client, "CAP-01") == 1


BAD_SYNC_BODIES: dict[str, tuple[Any, list[str]]] = {
    "duplicate_sku": (
        sync_body(("TSHIRT-RED-M", 1), ("CAP-01", 1), ("TSHIRT-RED-M", 2)),
        ["items[2].sku"],
    ),
    "no_items": ({**sync_body(), "items": []}, ["items"]),
    "items_missing": ({k: v for k, v in sync_body().items() if k != "items"}, ["items"]),
    "501_items": (
        {**sync_body(), "items": [{"sku": f"S-{i}", "quantity": 1} for i in range(501)]},
        ["items"],
    ),
    "quantity_zero": (sync_body(("TSHIRT-RED-M", 0)), ["items[0].quantity"]),
    "quantity_negative": (sync_body(("CAP-01", 1), ("TSHIRT-RED-M", -1)), ["items[1].quantity"]),
    "quantity_100001": (sync_body(("TSHIRT-RED-M", 100_001)), ["items[0].quantity"]),
    "quantity_fraction": (
        {**sync_body(), "items": [{"sku": "CAP-01", "quantity": 1.5}]},
        ["items[0].quantity"],
    ),
    "quantity_string": (
        {**sync_body(), "items": [{"sku": "CAP-01", "quantity": "1"}]},
        ["items[0].quantity"],
    ),
    "sku_with_slash": (sync_body(("CAP/01", 1)), ["items[0].sku"]),
    "sku_with_space": (sync_body(("CAP 01", 1)), ["items[0].sku"]),
    "sku_65_chars": (sync_body(("S" * 65, 1)), ["items[0].sku"]),
    "sku_empty": (sync_body(("", 1)), ["items[0].sku"]),
    "unknown_field_in_a_line": (
        {**sync_body(), "items": [{"sku": "CAP-01", "quantity": 1, "price": 100}]},
        ["items[0].price"],
    ),
    "executed_at_without_offset": (
        sync_body(executed_at="2026-05-25T10:00:00"),
        ["executed_at"],
    ),
    "executed_at_date_only": (sync_body(executed_at="2026-05-25"), ["executed_at"]),
    "executed_at_integer": (sync_body(executed_at=1_779_670_800), ["executed_at"]),
    "executed_at_not_a_date": (sync_body(executed_at="yesterday"), ["executed_at"]),
    "mall_outside_the_three": (sync_body(mall="ebay"), ["mall"]),
    "mall_missing": ({k: v for k, v in sync_body().items() if k != "mall"}, ["mall"]),
    "rakuten_order_no_of_amazon_shape": (sync_body(order_no=amazon(50)), ["order_no"]),
    "rakuten_order_no_with_fullwidth_digit": (
        sync_body(order_no="354396-20260525-000000005\uff10"),
        ["order_no"],
    ),
    "amazon_order_no_of_rakuten_shape": (
        sync_body(mall="amazon", order_no=rakuten(50)),
        ["order_no"],
    ),
    "order_no_65_chars": (sync_body(mall="yahoo", order_no="A" * 65), ["order_no"]),
    "order_no_sql_injection": (
        sync_body(mall="yahoo", order_no="x'; DROP TABLE stock; --"),
        ["order_no"],
    ),
    "order_no_missing": ({k: v for k, v in sync_body().items() if k != "order_no"}, ["order_no"]),
    "unknown_top_level_field": (sync_body(source="manual"), ["source"]),
    "body_is_a_json_array": ([sync_body()], ["body"]),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("body", "fields"), BAD_SYNC_BODIES.values(), ids=list(BAD_SYNC_BODIES))
async def test_invalid_sync_execution_is_rejected_naming_the_field_and_changes_nothing(
    client: AsyncClient, db: Database, body: Any, fields: list[str]
) -> None:
    await assert_rejected_without_change(
        client, db, lambda: client.post("/sync-executions", json=body), fields
    )
    await assert_no_sync_execution(client)


@pytest.mark.usefixtures("seeded")
async def test_duplicate_sku_is_reported_as_a_duplicate_with_its_value(
    client: AsyncClient, db: Database
) -> None:
    request = sync_body(("CAP-01", 1), ("CAP-01", 1))
    body = await assert_rejected_without_change(
        client, db, lambda: client.post("/sync-executions", json=request), ["items[1].sku"]
    )
    assert body["errors"][0]["type"] == "duplicate"
    assert body["errors"][0]["input"] == "CAP-01"


# --- path parameters of the reads --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/stock/A%20B",
        "/stock/" + "S" * 65,
        "/sync-executions/" + "A" * 65,
        "/sync-executions/x%27%20OR%20%271%27%3D%271",
        "/restocks/" + "A" * 65,
        "/restocks/-leading-dash",
    ],
)
async def test_malformed_path_parameter_of_a_read_is_a_problem_not_a_crash(
    client: AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["errors"][0]["location"] == "path"


# --- JSON that parses but that no problem body can echo ---------------------------------


def raw(body: Json) -> bytes:
    """JSON as Python writes it: NaN/Infinity literals, \\uXXXX escapes for lone surrogates."""
    return json.dumps(body).encode()


INF = float("inf")
NAN = float("nan")

UNECHOABLE_INPUTS: dict[str, tuple[str, str, bytes, list[str]]] = {
    "stock_quantity_nan": ("PUT", "/stock/CAP-01", raw({"quantity": NAN}), ["quantity"]),
    "stock_quantity_infinity": ("PUT", "/stock/CAP-01", raw({"quantity": INF}), ["quantity"]),
    "stock_quantity_1e400": ("PUT", "/stock/CAP-01", b'{"quantity": 1e400}', ["quantity"]),
    "sync_quantity_minus_infinity": (
        "POST",
        "/sync-executions",
        raw({**sync_body(), "items": [{"sku": "CAP-01", "quantity": -INF}]}),
        ["items[0].quantity"],
    ),
    "sync_executed_at_nan": (
        "POST",
        "/sync-executions",
        raw(sync_body(executed_at=NAN)),
        ["executed_at"],
    ),
    "restock_unknown_field_nan": (
        "POST",
        "/restocks",
        raw({**restock_body(), "priority": NAN}),
        ["priority"],
    ),
    "restock_order_no_lone_surrogate": (
        "POST",
        "/restocks",
        raw(with_order_no("yahoo", "store\ud8003")),
        ["orders[1].order_no"],
    ),
    "restock_message_lone_surrogate": (
        "POST",
        "/restocks",
        raw(restock_body("rakuten", order(rakuten(3), succeeded=False, message="\udc00"))),
        ["orders[2].mall_cancel_message"],
    ),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("method", "path", "content", "fields"),
    UNECHOABLE_INPUTS.values(),
    ids=list(UNECHOABLE_INPUTS),
)
async def test_value_json_parses_but_cannot_echo_is_rejected_with_422_not_500(
    client: AsyncClient, db: Database, method: str, path: str, content: bytes, fields: list[str]
) -> None:
    await assert_rejected_without_change(
        client,
        db,
        lambda: client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        ),
        fields,
    )


# --- a body read one way only: UTF-8, each key once ---------------------------------------

RESTOCK_TEXT = json.dumps(restock_body("rakuten"), ensure_ascii=False)
ENCODED_OTHERWISE = {
    "utf16": RESTOCK_TEXT.encode("utf-16"),
    "utf16_le_without_bom": RESTOCK_TEXT.encode("utf-16-le"),
    "utf32": RESTOCK_TEXT.encode("utf-32"),
    "utf8_with_bom": RESTOCK_TEXT.encode("utf-8-sig"),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("content", ENCODED_OTHERWISE.values(), ids=list(ENCODED_OTHERWISE))
async def test_a_body_that_is_not_utf8_is_422_naming_the_body_and_changes_nothing(
    client: AsyncClient, db: Database, content: bytes
) -> None:
    for method, path, body in (
        ("POST", "/restocks", content),
        ("PUT", "/stock/NEW-SKU", '{"quantity": 6}'.encode("utf-16")),
    ):
        answer = await assert_rejected_without_change(
            client,
            db,
            lambda m=method, p=path, b=body: client.request(
                m, p, content=b, headers={"content-type": "application/json"}
            ),
            ["body"],
        )
        assert answer["errors"][0]["type"] == "json_invalid"
    assert (await client.get("/stock/NEW-SKU")).status_code == 404


DUPLICATE_KEYS: dict[str, tuple[str, str, bytes, str]] = {
    "stock_quantity": ("PUT", "/stock/CAP-01", b'{"quantity": "x", "quantity": 6}', "quantity"),
    "restore_stock": (
        "POST",
        "/restocks",
        RESTOCK_TEXT.replace(
            '"restore_stock": true', '"restore_stock": false, "restore_stock": true'
        ).encode(),
        "restore_stock",
    ),
    "an_order_no_in_the_batch": (
        "POST",
        "/restocks",
        RESTOCK_TEXT.replace(
            f'"order_no": "{RESTORED_BEFORE}"',
            f'"order_no": "{RESTORED_BEFORE}", "order_no": "{rakuten(3)}"',
        ).encode(),
        "orders[1].order_no",
    ),
    "a_sku_of_a_batched_execution": (
        "POST",
        "/sync-executions/batch",
        json.dumps(
            {
                "executions": [
                    {
                        "order_no": rakuten(7),
                        "mall": "rakuten",
                        "items": [{"sku": "CAP-01", "quantity": 1}],
                    }
                ]
            }
        )
        .replace('"sku": "CAP-01"', '"sku": "CAP-01", "sku": "SOCKS-3P"')
        .encode(),
        "executions[0].items[0].sku",
    ),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("method", "path", "content", "field"), DUPLICATE_KEYS.values(), ids=list(DUPLICATE_KEYS)
)
async def test_a_key_given_twice_in_one_object_is_422_naming_it_and_changes_nothing(
    client: AsyncClient, db: Database, method: str, path: str, content: bytes, field: str
) -> None:
    answer = await assert_rejected_without_change(
        client,
        db,
        lambda: client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        ),
        [field],
    )
    assert answer["errors"][0]["type"] == "json_duplicate_key"
    assert answer["errors"][0]["location"] == "body"


@pytest.mark.usefixtures("seeded")
async def test_two_idempotency_keys_on_one_request_are_400_and_change_nothing(
    client: AsyncClient, db: Database
) -> None:
    before = await books(client, db)
    response = await client.post(
        "/restocks",
        content=RESTOCK_TEXT.encode(),
        headers=[
            ("content-type", "application/json"),
            ("idempotency-key", "first"),
            ("idempotency-key", "second"),
        ],
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert [e["field"] for e in response.json()["errors"]] == ["Idempotency-Key"]
    assert await books(client, db) == before


async def test_a_json_body_is_read_before_routing_so_a_key_given_twice_is_422_on_any_path(
    client: AsyncClient,
) -> None:
    """docs/api.md's order of checks: the body's JSON before the route."""
    twice = b'{"quantity": 1, "quantity": 2}'
    json_type = {"content-type": "application/json"}
    response = await client.post("/no-such-route", content=twice, headers=json_type)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] == "json_duplicate_key"
    once = b'{"quantity": 1}'
    assert (await client.post("/no-such-route", content=once, headers=json_type)).status_code == 404
