"""Every row of the contract's rule table and message table, over HTTP, with exact stock."""

import sqlalchemy as sa
from httpx import AsyncClient

from restock_service.messages import (
    FAILURES_HEADER,
    MESSAGE,
    NO_SUCCEEDED_CANCEL,
    Code,
    failure_line,
    restored_count_line,
)
from restock_service.tables import restock_lines, restocks
from tests.helpers import (
    Database,
    amazon,
    cancel_ok,
    count_rows,
    ledger,
    order,
    put_stock,
    quantities,
    quantity,
    rakuten,
    repeat_requests,
    sync,
)


async def _synced(client: AsyncClient, n: int, items: dict[str, int], mall: str = "rakuten") -> str:
    order_no = rakuten(n) if mall != "amazon" else amazon(n)
    await sync(client, order_no, items, mall)
    return order_no


def _codes(body: dict) -> list[str]:
    return [r["code"] for r in body["results"]]


async def test_rule1_checkbox_off_skips_every_order_records_nothing_and_says_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = await _synced(client, 1, {"A": 3})

    body = await cancel_ok(client, [order(order_no), order(rakuten(2), False)], restore_stock=False)

    assert _codes(body) == [Code.NOT_REQUESTED, Code.NOT_REQUESTED]
    assert body["results"][0]["message"] == MESSAGE[Code.NOT_REQUESTED]
    assert body["results"][0]["outcome"] == "skip"
    assert body["messages"] == []
    assert body["counts"] == {"success": 0, "skip": 2, "fail": 0}
    assert await quantity(client, "A") == 7
    assert await count_rows(db, restocks) == 0
    assert (await client.get(f"/restocks/{order_no}")).status_code == 404


async def test_rule1_checkbox_off_beats_an_earlier_restore_and_counts_no_repeat(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = await _synced(client, 1, {"A": 3})
    await cancel_ok(client, [order(order_no)])

    body = await cancel_ok(client, [order(order_no)], restore_stock=False)

    assert _codes(body) == [Code.NOT_REQUESTED]
    assert await repeat_requests(db, order_no) == 0
    assert await quantity(client, "A") == 10


async def test_rule2_failed_mall_cancel_is_skipped_and_not_recorded(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = await _synced(client, 1, {"A": 3})

    body = await cancel_ok(client, [order(order_no, False, "キャンセルできません")])

    assert _codes(body) == [Code.MALL_CANCEL_FAILED]
    assert body["results"][0]["message"] == MESSAGE[Code.MALL_CANCEL_FAILED]
    assert body["results"][0]["items"] == []
    assert body["messages"] == [NO_SUCCEEDED_CANCEL]
    assert await quantity(client, "A") == 7
    assert await count_rows(db, restocks) == 0


async def test_rule3_second_request_for_same_order_is_skipped_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = await _synced(client, 1, {"A": 3})
    await cancel_ok(client, [order(order_no)])

    for expected_repeats in (1, 2):
        body = await cancel_ok(client, [order(order_no)])
        assert _codes(body) == [Code.ALREADY_RESTORED]
        assert body["results"][0]["message"] == MESSAGE[Code.ALREADY_RESTORED]
        assert body["results"][0]["items"] == []
        assert body["messages"] == [MESSAGE[Code.ALREADY_RESTORED]]
        assert await repeat_requests(db, order_no) == expected_repeats

    assert await quantity(client, "A") == 10
    assert await ledger(db, "restock") == [("A", 3, order_no)]
    record = (await client.get(f"/restocks/{order_no}")).json()
    assert record["repeat_requests"] == 2
    assert record["status"] == "restored"


async def test_rule4_previously_failed_order_is_never_retried_even_after_the_sku_returns(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    order_no = await _synced(client, 1, {"A": 3, "B": 1})
    assert (await client.delete("/stock/B")).status_code == 204
    first = await cancel_ok(client, [order(order_no)])
    assert _codes(first) == [Code.PRODUCT_NOT_FOUND]

    await put_stock(client, "B", 10)  # the product is registered again
    body = await cancel_ok(client, [order(order_no)])

    assert _codes(body) == [Code.PREVIOUSLY_FAILED]
    result = body["results"][0]
    assert result["message"] == MESSAGE[Code.PREVIOUSLY_FAILED]
    assert result["outcome"] == "skip"
    assert result["items"] == [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 1}]
    assert result["missing_skus"] == []
    assert body["messages"] == []
    assert await quantities(client, "A", "B") == {"A": 7, "B": 10}
    assert await ledger(db, "restock") == []
    assert await repeat_requests(db, order_no) == 1


async def test_rule5_order_without_sync_history_is_skipped_and_not_recorded(
    client: AsyncClient, db: Database
) -> None:
    body = await cancel_ok(client, [order(rakuten(9))])

    assert _codes(body) == [Code.NO_SYNC_HISTORY]
    assert body["results"][0]["message"] == MESSAGE[Code.NO_SYNC_HISTORY]
    assert body["messages"] == []
    assert await count_rows(db, restocks) == 0
    assert (await client.get(f"/restocks/{rakuten(9)}")).status_code == 404


async def test_rule6_sync_from_another_mall_fails_is_recorded_and_changes_no_stock(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = rakuten(2)  # a Rakuten-shaped number is a valid Yahoo order number too
    await sync(client, order_no, {"A": 2}, mall="yahoo")

    body = await cancel_ok(client, [order(order_no)], mall="rakuten")

    result = body["results"][0]
    assert result["code"] == Code.MALL_MISMATCH
    assert result["outcome"] == "fail"
    assert result["message"] == MESSAGE[Code.MALL_MISMATCH]
    assert result["items"] == [{"sku": "A", "quantity": 2}]
    assert result["missing_skus"] == []
    assert body["messages"] == [
        FAILURES_HEADER,
        failure_line(order_no, MESSAGE[Code.MALL_MISMATCH]),
    ]
    assert await quantity(client, "A") == 8
    assert await ledger(db, "restock") == []
    record = (await client.get(f"/restocks/{order_no}")).json()
    assert (record["status"], record["code"]) == ("failed", Code.MALL_MISMATCH)


async def test_rule7_removed_product_fails_the_whole_order_and_changes_no_stock(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    order_no = await _synced(client, 1, {"A": 3, "B": 2})
    assert (await client.delete("/stock/B")).status_code == 204

    body = await cancel_ok(client, [order(order_no)])

    result = body["results"][0]
    assert result["code"] == Code.PRODUCT_NOT_FOUND
    assert result["outcome"] == "fail"
    assert result["message"] == MESSAGE[Code.PRODUCT_NOT_FOUND]
    assert result["items"] == [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 2}]
    assert result["missing_skus"] == ["B"]
    assert body["counts"] == {"success": 0, "skip": 0, "fail": 1}
    assert body["messages"] == [
        FAILURES_HEADER,
        failure_line(order_no, MESSAGE[Code.PRODUCT_NOT_FOUND]),
    ]
    assert await quantities(client, "A", "B") == {"A": 7, "B": None}
    assert await ledger(db, "restock") == []
    record = (await client.get(f"/restocks/{order_no}")).json()
    assert record["status"] == "failed"
    assert record["missing_skus"] == ["B"]
    assert record["items"] == result["items"]


async def test_rule8_restores_the_snapshot_not_what_stock_or_the_order_holds_now(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 4)
    order_no = await _synced(client, 1, {"A": 2, "B": 3})  # A 8, B 1
    await put_stock(client, "A", 50)  # stock changed by hand after the sync
    await sync(client, rakuten(2), {"B": 5})  # another order oversells B: 1 - 5 = -4

    body = await cancel_ok(client, [order(order_no)])

    result = body["results"][0]
    assert result["code"] == Code.RESTORED
    assert result["outcome"] == "success"
    assert result["items"] == [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 3}]
    assert result["missing_skus"] == []
    assert await quantities(client, "A", "B") == {"A": 52, "B": -1}
    assert await ledger(db, "restock") == [("A", 2, order_no), ("B", 3, order_no)]
    record = (await client.get(f"/restocks/{order_no}")).json()
    assert record["code"] == Code.RESTORED
    assert record["message"] == MESSAGE[Code.RESTORED]
    assert record["repeat_requests"] == 0
    assert record["items"] == result["items"]
    assert record["requested_at"].endswith("Z") or "+" in record["requested_at"]


async def test_mixed_batch_reports_each_order_in_request_order_with_every_batch_line(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 100)
    await put_stock(client, "GONE", 1)
    ok1 = await _synced(client, 1, {"A": 1})
    ok2 = await _synced(client, 2, {"A": 2})
    repeat = await _synced(client, 3, {"A": 4})
    missing = await _synced(client, 4, {"GONE": 1})
    await sync(client, rakuten(5), {"A": 8}, mall="yahoo")
    await cancel_ok(client, [order(repeat)])
    assert (await client.delete("/stock/GONE")).status_code == 204
    before = await quantity(client, "A")

    orders = [
        order(missing),
        order(ok1),
        order(rakuten(6), False, "ステータスが不正です"),
        order(repeat),
        order(rakuten(7)),  # never synced
        order(rakuten(5)),  # synced for yahoo
        order(ok2),
    ]
    body = await cancel_ok(client, orders)

    assert [r["order_no"] for r in body["results"]] == [o["order_no"] for o in orders]
    assert _codes(body) == [
        Code.PRODUCT_NOT_FOUND,
        Code.RESTORED,
        Code.MALL_CANCEL_FAILED,
        Code.ALREADY_RESTORED,
        Code.NO_SYNC_HISTORY,
        Code.MALL_MISMATCH,
        Code.RESTORED,
    ]
    assert body["counts"] == {"success": 2, "skip": 3, "fail": 2}
    assert body["messages"] == [
        restored_count_line(2),
        MESSAGE[Code.ALREADY_RESTORED],
        FAILURES_HEADER,
        failure_line(missing, MESSAGE[Code.PRODUCT_NOT_FOUND]),
        failure_line(rakuten(5), MESSAGE[Code.MALL_MISMATCH]),
    ]
    assert await quantity(client, "A") == before + 1 + 2
    assert await count_rows(db, restocks) == 5  # repeat, missing, ok1, ok2, mismatch


async def test_batch_where_no_cancel_succeeded_says_so_and_touches_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    order_no = await _synced(client, 1, {"A": 3})

    body = await cancel_ok(client, [order(order_no, False), order(rakuten(2), False)])

    assert body["messages"] == [NO_SUCCEEDED_CANCEL]
    assert body["counts"] == {"success": 0, "skip": 2, "fail": 0}
    assert await quantity(client, "A") == 7
    assert await count_rows(db, restocks) == 0


async def test_one_order_listing_a_sku_once_per_line_restores_lines_of_shared_skus_across_orders(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 0)
    first = await _synced(client, 1, {"A": 2})
    second = await _synced(client, 2, {"A": 5})

    body = await cancel_ok(client, [order(second), order(first)])

    assert _codes(body) == [Code.RESTORED, Code.RESTORED]
    assert body["messages"] == [restored_count_line(2)]
    assert await quantity(client, "A") == 0
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT order_no, delta, quantity_after FROM stock_movements "
                    "WHERE reason = 'restock' ORDER BY id"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [(second, 5, -2), (first, 2, 0)]


async def test_failed_orders_never_half_write_their_lines_or_stock(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    order_no = await _synced(client, 1, {"A": 1, "B": 1})
    await client.delete("/stock/B")

    await cancel_ok(client, [order(order_no)])

    assert await quantity(client, "A") == 9
    assert await count_rows(db, restock_lines) == 2  # the record keeps the snapshot lines
    assert await ledger(db, "restock") == []


async def test_amazon_order_restores_with_amazon_numbers(client: AsyncClient) -> None:
    await put_stock(client, "A", 1)
    order_no = await _synced(client, 1, {"A": 1}, mall="amazon")

    body = await cancel_ok(client, [order(order_no)], mall="amazon")

    assert _codes(body) == [Code.RESTORED]
    assert body["mall"] == "amazon"
    assert await quantity(client, "A") == 1


async def test_unknown_restock_is_404_with_a_problem_body(client: AsyncClient) -> None:
    response = await client.get(f"/restocks/{rakuten(404)}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404
