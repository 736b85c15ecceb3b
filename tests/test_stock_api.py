"""Stock per sku and the sync executions that deduct from it, with the ledger they write."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from httpx import AsyncClient, Response

from restock_service.tables import stock_movements, sync_executions
from tests.helpers import (
    Database,
    amazon,
    count_rows,
    ledger,
    put_stock,
    quantities,
    quantity,
    rakuten,
    sync,
)

PROBLEM_JSON = "application/problem+json"


def instant(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that must carry an explicit offset."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, f"{text!r} has no offset"
    assert value.utcoffset() is not None
    return value


def assert_not_found(response: Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["status"] == 404


async def quantities_after(db: Database, sku: str) -> list[int]:
    """The ledger's running quantity for ``sku``, oldest first."""
    async with db.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(stock_movements.c.quantity_after)
                    .where(stock_movements.c.sku == sku)
                    .order_by(stock_movements.c.id)
                )
            ).scalars()
        )


# --- PUT / GET / DELETE /stock/{sku} ----------------------------------------------------


async def test_put_registers_a_sku_and_answers_its_quantity_with_an_offset_timestamp(
    client: AsyncClient, db: Database
) -> None:
    before = datetime.now(UTC)
    response = await client.put("/stock/TSHIRT-RED-M", json={"quantity": 7})
    after = datetime.now(UTC)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"sku", "quantity", "updated_at"}
    assert body["sku"] == "TSHIRT-RED-M"
    assert body["quantity"] == 7
    assert before <= instant(body["updated_at"]) <= after
    assert await ledger(db) == [("TSHIRT-RED-M", 7, None)]
    assert await ledger(db, "set") == [("TSHIRT-RED-M", 7, None)]


async def test_get_answers_what_put_stored(client: AsyncClient) -> None:
    put = (await client.put("/stock/CAP-01", json={"quantity": 3})).json()
    response = await client.get("/stock/CAP-01")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"sku", "quantity", "updated_at"}
    assert body["sku"] == "CAP-01"
    assert body["quantity"] == 3
    assert instant(body["updated_at"]) == instant(put["updated_at"])


async def test_put_again_sets_the_quantity_and_ledgers_the_difference(
    client: AsyncClient, db: Database
) -> None:
    first = (await client.put("/stock/CAP-01", json={"quantity": 10})).json()
    response = await client.put("/stock/CAP-01", json={"quantity": 4})
    assert response.status_code == 200, response.text
    assert response.json()["quantity"] == 4
    assert instant(response.json()["updated_at"]) >= instant(first["updated_at"])
    await put_stock(client, "CAP-01", 25)

    assert await quantity(client, "CAP-01") == 25
    assert await ledger(db, "set") == [
        ("CAP-01", 10, None),
        ("CAP-01", -6, None),
        ("CAP-01", 21, None),
    ]
    assert await quantities_after(db, "CAP-01") == [10, 4, 25]


async def test_put_accepts_the_quantity_bounds(client: AsyncClient) -> None:
    await put_stock(client, "LOW", 0)
    await put_stock(client, "HIGH", 1_000_000_000)
    assert await quantities(client, "LOW", "HIGH") == {"LOW": 0, "HIGH": 1_000_000_000}


async def test_put_of_one_sku_leaves_the_others_alone(client: AsyncClient, db: Database) -> None:
    await put_stock(client, "A-1", 1)
    await put_stock(client, "B-1", 2)
    await put_stock(client, "A-1", 5)
    assert await quantities(client, "A-1", "B-1") == {"A-1": 5, "B-1": 2}
    assert await ledger(db) == [("A-1", 1, None), ("B-1", 2, None), ("A-1", 4, None)]


async def test_sku_of_64_visible_ascii_characters_with_punctuation_is_accepted(
    client: AsyncClient,
) -> None:
    punctuation = "!\"$&'()*+,-.:;<=>@[\\]^_`{|}~"
    sku = (punctuation + "Az09" * 16)[:64]
    path = f"/stock/{quote(sku, safe='')}"
    response = await client.put(path, json={"quantity": 2})
    assert response.status_code == 200, response.text
    assert response.json()["sku"] == sku
    assert (await client.get(path)).json()["sku"] == sku


async def test_skus_are_case_sensitive(client: AsyncClient) -> None:
    await put_stock(client, "cap-01", 1)
    await put_stock(client, "CAP-01", 2)
    assert await quantities(client, "cap-01", "CAP-01") == {"cap-01": 1, "CAP-01": 2}


async def test_get_unknown_sku_is_404(client: AsyncClient) -> None:
    assert_not_found(await client.get("/stock/NEVER-REGISTERED"))


async def test_delete_removes_the_sku_and_a_second_delete_is_404(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "CAP-01", 3)

    response = await client.delete("/stock/CAP-01")
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert_not_found(await client.get("/stock/CAP-01"))
    assert_not_found(await client.delete("/stock/CAP-01"))
    assert await ledger(db, "delete") == [("CAP-01", -3, None)]
    assert await quantities_after(db, "CAP-01") == [3, 0]


async def test_delete_of_an_unknown_sku_is_404_and_writes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "CAP-01", 3)
    assert_not_found(await client.delete("/stock/NEVER-REGISTERED"))
    assert await ledger(db) == [("CAP-01", 3, None)]
    assert await quantity(client, "CAP-01") == 3


async def test_delete_of_an_oversold_sku_ledgers_minus_its_negative_quantity(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "CAP-01", 1)
    await sync(client, rakuten(1), {"CAP-01": 3})
    assert (await client.delete("/stock/CAP-01")).status_code == 204
    assert await ledger(db, "delete") == [("CAP-01", 2, None)]
    assert await quantities_after(db, "CAP-01") == [1, -2, 0]


async def test_sku_registered_again_after_delete_starts_from_zero(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "CAP-01", 3)
    assert (await client.delete("/stock/CAP-01")).status_code == 204
    await put_stock(client, "CAP-01", 5)
    assert await quantity(client, "CAP-01") == 5
    assert await ledger(db) == [("CAP-01", 3, None), ("CAP-01", -3, None), ("CAP-01", 5, None)]


# --- POST /sync-executions --------------------------------------------------------------


def execution(
    order_no: str, items: list[tuple[str, int]], mall: str = "rakuten", **more: Any
) -> dict[str, Any]:
    return {
        "order_no": order_no,
        "mall": mall,
        "items": [{"sku": sku, "quantity": q} for sku, q in items],
        **more,
    }


async def register(client: AsyncClient, **stock: int) -> None:
    for sku, q in stock.items():
        await put_stock(client, sku, q)


async def test_sync_execution_is_stored_and_answered_with_items_in_request_order(
    client: AsyncClient,
) -> None:
    await register(client, **{"Z-LAST": 10, "A-FIRST": 10, "M-MIDDLE": 10})
    lines = [("Z-LAST", 2), ("A-FIRST", 1), ("M-MIDDLE", 5)]

    before = datetime.now(UTC)
    response = await client.post("/sync-executions", json=execution(rakuten(1), lines))
    after = datetime.now(UTC)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["order_no"] == rakuten(1)
    assert body["mall"] == "rakuten"
    assert body["items"] == [{"sku": s, "quantity": q} for s, q in lines]
    assert before <= instant(body["executed_at"]) <= after
    assert before <= instant(body["recorded_at"]) <= after

    stored = await client.get(f"/sync-executions/{rakuten(1)}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["items"] == body["items"]
    assert stored.json()["order_no"] == rakuten(1)
    assert stored.json()["mall"] == "rakuten"
    assert instant(stored.json()["executed_at"]) == instant(body["executed_at"])
    assert instant(stored.json()["recorded_at"]) == instant(body["recorded_at"])


async def test_given_executed_at_is_kept_as_the_same_instant(client: AsyncClient) -> None:
    await register(client, **{"CAP-01": 5})
    given = "2026-05-25T10:00:00+09:00"
    response = await client.post(
        "/sync-executions", json=execution(rakuten(1), [("CAP-01", 1)], executed_at=given)
    )
    assert response.status_code == 201, response.text
    assert instant(response.json()["executed_at"]) == instant(given)
    assert instant(response.json()["executed_at"]) == datetime(2026, 5, 25, 1, 0, tzinfo=UTC)

    stored = (await client.get(f"/sync-executions/{rakuten(1)}")).json()
    assert instant(stored["executed_at"]) == instant(given)
    assert instant(stored["recorded_at"]) > instant(given)


async def test_executed_at_with_negative_offset_and_microseconds_is_kept_exactly(
    client: AsyncClient,
) -> None:
    await register(client, **{"CAP-01": 5})
    given = datetime(2026, 5, 24, 20, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-7)))
    response = await client.post(
        "/sync-executions",
        json=execution(amazon(1), [("CAP-01", 1)], mall="amazon", executed_at=given.isoformat()),
    )
    assert response.status_code == 201, response.text
    stored = (await client.get(f"/sync-executions/{amazon(1)}")).json()
    assert instant(response.json()["executed_at"]) == given
    assert instant(stored["executed_at"]) == given


async def test_sync_execution_deducts_every_line_and_ledgers_each_with_the_order(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"TSHIRT-RED-M": 10, "CAP-01": 5, "UNTOUCHED": 7})
    await sync(client, rakuten(1), {"TSHIRT-RED-M": 2, "CAP-01": 1})

    assert await quantities(client, "TSHIRT-RED-M", "CAP-01", "UNTOUCHED") == {
        "TSHIRT-RED-M": 8,
        "CAP-01": 4,
        "UNTOUCHED": 7,
    }
    assert await ledger(db, "sync_execution") == [
        ("TSHIRT-RED-M", -2, rakuten(1)),
        ("CAP-01", -1, rakuten(1)),
    ]
    assert await quantities_after(db, "TSHIRT-RED-M") == [10, 8]


async def test_each_mall_can_record_a_sync_execution(client: AsyncClient) -> None:
    await register(client, **{"CAP-01": 10})
    await sync(client, rakuten(1), {"CAP-01": 1})
    await sync(client, amazon(1), {"CAP-01": 2}, mall="amazon")
    await sync(client, "store-1", {"CAP-01": 3}, mall="yahoo")
    assert await quantity(client, "CAP-01") == 4
    for order_no, mall in [(rakuten(1), "rakuten"), (amazon(1), "amazon"), ("store-1", "yahoo")]:
        assert (await client.get(f"/sync-executions/{order_no}")).json()["mall"] == mall


async def test_execution_of_500_lines_at_the_quantity_limit_is_accepted(
    client: AsyncClient,
) -> None:
    skus = [f"S-{i:03d}" for i in range(500)]
    for sku in skus[:2]:
        await put_stock(client, sku, 0)
    for sku in skus[2:]:
        await put_stock(client, sku, 100_000)
    response = await client.post(
        "/sync-executions", json=execution(rakuten(1), [(s, 100_000) for s in skus])
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["items"]) == 500
    assert await quantities(client, skus[0], skus[-1]) == {skus[0]: -100_000, skus[-1]: 0}


async def test_second_execution_for_the_same_order_is_409_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"TSHIRT-RED-M": 10, "CAP-01": 5})
    await sync(client, rakuten(1), {"TSHIRT-RED-M": 2})
    first = (await client.get(f"/sync-executions/{rakuten(1)}")).json()
    movements = await count_rows(db, stock_movements)

    for again in [
        execution(rakuten(1), [("TSHIRT-RED-M", 2)]),
        execution(rakuten(1), [("CAP-01", 4), ("TSHIRT-RED-M", 1)]),
        execution(rakuten(1), [("CAP-01", 1)], mall="yahoo"),
    ]:
        response = await client.post("/sync-executions", json=again)
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["status"] == 409

    assert await quantities(client, "TSHIRT-RED-M", "CAP-01") == {"TSHIRT-RED-M": 8, "CAP-01": 5}
    assert await count_rows(db, stock_movements) == movements
    assert await count_rows(db, sync_executions) == 1
    assert (await client.get(f"/sync-executions/{rakuten(1)}")).json() == first


async def test_repeated_execution_naming_an_unregistered_sku_is_409_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"CAP-01": 5})
    await sync(client, rakuten(1), {"CAP-01": 1})
    response = await client.post(
        "/sync-executions", json=execution(rakuten(1), [("NOT-REGISTERED", 1)])
    )
    assert response.status_code == 409, response.text
    assert await quantity(client, "CAP-01") == 4
    assert await count_rows(db, sync_executions) == 1


async def test_get_sync_execution_of_an_unknown_order_is_404(client: AsyncClient) -> None:
    assert_not_found(await client.get(f"/sync-executions/{rakuten(404)}"))


async def test_sync_execution_survives_the_removal_of_its_sku(client: AsyncClient) -> None:
    await register(client, **{"CAP-01": 5})
    await sync(client, rakuten(1), {"CAP-01": 2})
    assert (await client.delete("/stock/CAP-01")).status_code == 204
    response = await client.get(f"/sync-executions/{rakuten(1)}")
    assert response.status_code == 200, response.text
    assert response.json()["items"] == [{"sku": "CAP-01", "quantity": 2}]


# --- oversell ---------------------------------------------------------------------------


async def test_oversell_drives_stock_negative_and_records_it(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"CAP-01": 1, "TSHIRT-RED-M": 5})
    response = await client.post(
        "/sync-executions", json=execution(rakuten(1), [("CAP-01", 3), ("TSHIRT-RED-M", 1)])
    )
    assert response.status_code == 201, response.text

    assert await quantities(client, "CAP-01", "TSHIRT-RED-M") == {"CAP-01": -2, "TSHIRT-RED-M": 4}
    assert await ledger(db, "sync_execution") == [
        ("CAP-01", -3, rakuten(1)),
        ("TSHIRT-RED-M", -1, rakuten(1)),
    ]
    assert await quantities_after(db, "CAP-01") == [1, -2]


async def test_oversold_stock_keeps_going_down_with_later_executions(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"CAP-01": 0})
    await sync(client, rakuten(1), {"CAP-01": 2})
    await sync(client, rakuten(2), {"CAP-01": 3})
    assert await quantity(client, "CAP-01") == -5
    assert await quantities_after(db, "CAP-01") == [0, -2, -5]


async def test_put_on_oversold_stock_ledgers_the_difference_from_the_negative_quantity(
    client: AsyncClient, db: Database
) -> None:
    await register(client, **{"CAP-01": 1})
    await sync(client, rakuten(1), {"CAP-01": 3})
    await put_stock(client, "CAP-01", 4)
    assert await quantity(client, "CAP-01") == 4
    assert await ledger(db, "set") == [("CAP-01", 1, None), ("CAP-01", 6, None)]


async def test_an_adjustment_may_not_leave_a_quantity_past_two_billion_either_way(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "UP", 1_000_000_000)
    await put_stock(client, "DOWN", 0)
    body = {"reason": "棚卸し"}

    up = await client.post("/stock/UP/adjustments", json={**body, "delta": 1_000_000_000})
    past = await client.post("/stock/UP/adjustments", json={**body, "delta": 1})
    for _ in range(2):
        down = await client.post("/stock/DOWN/adjustments", json={**body, "delta": -1_000_000_000})
    below = await client.post("/stock/DOWN/adjustments", json={**body, "delta": -1})

    assert up.json()["quantity"] == 2_000_000_000
    assert down.json()["quantity"] == -2_000_000_000
    for refused in (past, below):
        assert refused.status_code == 422
        (error,) = refused.json()["errors"]
        assert error["field"] == "delta"
        assert "between -2,000,000,000 and 2,000,000,000" in error["message"]
    assert await quantities(client, "UP", "DOWN") == {"UP": 2_000_000_000, "DOWN": -2_000_000_000}
    assert await ledger(db, "adjustment") == [
        ("UP", 1_000_000_000, None),
        ("DOWN", -1_000_000_000, None),
        ("DOWN", -1_000_000_000, None),
    ]
