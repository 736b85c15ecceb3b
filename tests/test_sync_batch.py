"""POST /sync-executions/batch: each order decided on its own, recorded at most once.

Every test runs on SQLite and on PostgreSQL. A batch answers 200 with one result per
execution in request order, unless it is invalid as a whole: then 422 and nothing written.
"""

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from restock_service.books import check_books
from restock_service.messages import SyncCode
from restock_service.store.postgres import PostgresStore
from restock_service.tables import stock, stock_movements, sync_execution_lines, sync_executions
from tests.helpers import (
    Database,
    amazon,
    count_rows,
    ledger,
    put_stock,
    quantities,
    rakuten,
    sync,
)
from tests.servers import running_servers

PROBLEM_JSON = "application/problem+json"
Json = dict[str, Any]

RECORDED, ALREADY, NOT_REGISTERED = (
    SyncCode.RECORDED,
    SyncCode.ALREADY_RECORDED,
    SyncCode.SKU_NOT_REGISTERED,
)


def execution(order_no: str, items: dict[str, int], mall: str = "rakuten", **more: Any) -> Json:
    return {
        "order_no": order_no,
        "mall": mall,
        "items": [{"sku": sku, "quantity": q} for sku, q in items.items()],
        **more,
    }


async def post_batch(client: AsyncClient, executions: list[Json]) -> Response:
    return await client.post("/sync-executions/batch", json={"executions": executions})


async def batch_ok(client: AsyncClient, executions: list[Json]) -> Json:
    response = await post_batch(client, executions)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def result(order_no: str, code: SyncCode, missing: Sequence[str] = ()) -> Json:
    return {"order_no": order_no, "code": code, "missing_skus": list(missing)}


async def movements(client: AsyncClient, sku: str) -> list[Json]:
    """The sku's ledger through the API, oldest first."""
    response = await client.get(f"/stock/{sku}/movements", params={"limit": 500})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    items: list[Json] = response.json()["items"]
    return items


async def sync_moves(client: AsyncClient, sku: str) -> list[tuple[int, int, str]]:
    """(delta, quantity_after, order_no) of the sku's sync_execution ledger rows, oldest first."""
    return [
        (m["delta"], m["quantity_after"], m["order_no"])
        for m in await movements(client, sku)
        if m["reason"] == "sync_execution"
    ]


async def assert_ledger_runs_to_the_quantity(client: AsyncClient, sku: str) -> None:
    """Each row's quantity_after is the previous one plus its delta, ending at the stock."""
    running = 0
    for move in await movements(client, sku):
        running += move["delta"]
        assert move["quantity_after"] == running, (sku, move)
    assert (await quantities(client, sku))[sku] == running


async def assert_books_balance(db: Database) -> None:
    async with db.engine.connect() as conn:
        report = await check_books(conn)
    assert report.problems == ()


async def recorded_execution(client: AsyncClient, order_no: str) -> Json | None:
    response = await client.get(f"/sync-executions/{order_no}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def items_of(stored: Json | None) -> dict[str, int]:
    assert stored is not None
    return {line["sku"]: line["quantity"] for line in stored["items"]}


# --- a mixed batch ------------------------------------------------------------------------


async def test_mixed_batch_answers_each_order_in_request_order_and_deducts_only_recorded_ones(
    client: AsyncClient, db: Database
) -> None:
    for sku, q in {"A": 10, "B": 5, "C": 7, "UNTOUCHED": 3}.items():
        await put_stock(client, sku, q)
    await sync(client, rakuten(2), {"A": 1})  # recorded before: A 10 -> 9
    executions = [
        execution(rakuten(1), {"A": 2, "B": 1}),
        execution(rakuten(2), {"A": 4, "C": 1}),
        # Missing skus are listed in item order, not sorted; registered lines don't move.
        execution(amazon(1), {"Z-GHOST": 1, "B": 1, "C": 2, "A-GHOST": 3}, mall="amazon"),
        execution("store-1", {"C": 3, "A": 1}, mall="yahoo"),
        execution(rakuten(3), {"A-GHOST": 1}),
    ]

    body = await batch_ok(client, executions)

    assert body == {
        "counts": {RECORDED: 2, ALREADY: 1, NOT_REGISTERED: 2},
        "results": [
            result(rakuten(1), RECORDED),
            result(rakuten(2), ALREADY),
            result(amazon(1), NOT_REGISTERED, ["Z-GHOST", "A-GHOST"]),
            result("store-1", RECORDED),
            result(rakuten(3), NOT_REGISTERED, ["A-GHOST"]),
        ],
    }
    assert await quantities(client, "A", "B", "C", "UNTOUCHED", "A-GHOST") == {
        "A": 9 - 2 - 1,
        "B": 5 - 1,
        "C": 7 - 3,
        "UNTOUCHED": 3,
        "A-GHOST": None,
    }
    # One ledger row per recorded line, in request order, each with the quantity it left.
    assert await sync_moves(client, "A") == [
        (-1, 9, rakuten(2)),
        (-2, 7, rakuten(1)),
        (-1, 6, "store-1"),
    ]
    assert await sync_moves(client, "B") == [(-1, 4, rakuten(1))]
    assert await sync_moves(client, "C") == [(-3, 4, "store-1")]
    assert await sync_moves(client, "UNTOUCHED") == []
    assert await ledger(db, "sync_execution") == [
        ("A", -1, rakuten(2)),
        ("A", -2, rakuten(1)),
        ("B", -1, rakuten(1)),
        ("C", -3, "store-1"),
        ("A", -1, "store-1"),
    ]

    first = await recorded_execution(client, rakuten(1))
    assert first is not None and (first["mall"], items_of(first)) == ("rakuten", {"A": 2, "B": 1})
    yahoo = await recorded_execution(client, "store-1")
    assert yahoo is not None and (yahoo["mall"], items_of(yahoo)) == ("yahoo", {"C": 3, "A": 1})
    assert items_of(await recorded_execution(client, rakuten(2))) == {"A": 1}  # the first one
    assert await recorded_execution(client, amazon(1)) is None
    assert await recorded_execution(client, rakuten(3)) is None
    assert await count_rows(db, sync_executions) == 3


async def test_counts_carry_all_three_codes_also_when_some_are_zero(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    executions = [execution(rakuten(1), {"A": 1}), execution(rakuten(2), {"A": 2})]

    first = await batch_ok(client, executions)
    again = await batch_ok(client, executions)
    unregistered = await batch_ok(client, [execution(rakuten(3), {"GHOST": 1})])

    assert first["counts"] == {RECORDED: 2, ALREADY: 0, NOT_REGISTERED: 0}
    assert again["counts"] == {RECORDED: 0, ALREADY: 2, NOT_REGISTERED: 0}
    assert unregistered["counts"] == {RECORDED: 0, ALREADY: 0, NOT_REGISTERED: 1}
    assert [r["code"] for r in again["results"]] == [ALREADY, ALREADY]
    assert (await quantities(client, "A"))["A"] == 7


async def test_executed_at_given_in_a_batch_is_kept_and_defaults_to_now(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    given = "2026-05-25T10:00:00+09:00"
    await batch_ok(
        client,
        [execution(rakuten(1), {"A": 1}, executed_at=given), execution(rakuten(2), {"A": 1})],
    )

    stored = await recorded_execution(client, rakuten(1))
    defaulted = await recorded_execution(client, rakuten(2))
    assert stored is not None and defaulted is not None
    assert datetime.fromisoformat(stored["executed_at"]) == datetime.fromisoformat(given)
    assert datetime.fromisoformat(defaulted["executed_at"]) == datetime.fromisoformat(
        defaulted["recorded_at"]
    )


# --- precedence -----------------------------------------------------------------------------


async def test_an_order_already_recorded_that_names_an_unregistered_sku_is_already_recorded(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 1})
    movements_before = await count_rows(db, stock_movements)

    body = await batch_ok(client, [execution(rakuten(1), {"GHOST": 1, "A": 2})])
    single = await client.post("/sync-executions", json=execution(rakuten(1), {"GHOST": 1, "A": 2}))

    assert body == {
        "counts": {RECORDED: 0, ALREADY: 1, NOT_REGISTERED: 0},
        "results": [result(rakuten(1), ALREADY)],
    }
    assert single.status_code == 409, single.text  # the single route: 409 before 422
    assert (await quantities(client, "A"))["A"] == 9
    assert await count_rows(db, stock_movements) == movements_before
    assert items_of(await recorded_execution(client, rakuten(1))) == {"A": 1}


# --- a whole request refused ----------------------------------------------------------------


def _valid_batch() -> list[Json]:
    """Three executions that would each be recorded: a refusal must write none of them."""
    return [
        execution(rakuten(1), {"A": 1, "B": 2}),
        execution(amazon(2), {"B": 1}, mall="amazon"),
        execution("store-3", {"A": 3}, mall="yahoo"),
    ]


def _with(index: int, **fields: Any) -> Json:
    batch = _valid_batch()
    batch[index].update(fields)
    return {"executions": batch}


INVALID_BATCHES: dict[str, tuple[Json, list[str]]] = {
    "empty": ({"executions": []}, ["executions"]),
    "1001_executions": (
        {"executions": [execution(rakuten(n), {"A": 1}) for n in range(1, 1002)]},
        ["executions"],
    ),
    "executions_missing": ({}, ["executions"]),
    "order_no_repeated_across_executions": (
        _with(2, order_no=rakuten(1), mall="rakuten"),
        ["executions[2].order_no"],
    ),
    "sku_repeated_inside_one_execution": (
        _with(0, items=[{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]),
        ["executions[0].items[1].sku"],
    ),
    "rakuten_order_no_of_the_wrong_shape": (
        _with(1, mall="rakuten"),  # amazon(2) is not a Rakuten order number
        ["executions[1].order_no"],
    ),
    "unknown_field_in_an_execution": (_with(1, note="x"), ["executions[1].note"]),
    "unknown_field_in_a_line": (
        _with(2, items=[{"sku": "A", "quantity": 1, "price": 100}]),
        ["executions[2].items[0].price"],
    ),
    "unknown_top_level_field": ({"executions": _valid_batch(), "source": "x"}, ["source"]),
    "quantity_0": (
        _with(1, items=[{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 0}]),
        ["executions[1].items[1].quantity"],
    ),
    "mall_outside_the_three": (_with(2, mall="ebay"), ["executions[2].mall"]),
    "every_problem_named_with_its_index": (
        {
            "executions": [
                *_valid_batch(),
                {
                    **execution(rakuten(4), {"A": 1, "B": 1}),
                    "items": [
                        {"sku": "A", "quantity": 1},
                        {"sku": "B", "quantity": 1},
                        {"sku": "A", "quantity": 1},
                    ],
                },
                execution("12345", {"A": 1}),
                execution(rakuten(1), {"B": 1}),
            ]
        },
        ["executions[3].items[2].sku", "executions[4].order_no", "executions[5].order_no"],
    ),
}


@pytest.mark.parametrize(
    ("request_body", "fields"), INVALID_BATCHES.values(), ids=list(INVALID_BATCHES)
)
async def test_invalid_batch_is_refused_as_a_whole_naming_each_field_and_writes_nothing(
    client: AsyncClient, db: Database, request_body: Json, fields: list[str]
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    movements_before = await count_rows(db, stock_movements)

    response = await client.post("/sync-executions/batch", json=request_body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert await quantities(client, "A", "B") == {"A": 10, "B": 10}
    assert await count_rows(db, stock_movements) == movements_before
    assert await count_rows(db, sync_executions) == 0
    assert await count_rows(db, sync_execution_lines) == 0
    for e in _valid_batch():
        assert await recorded_execution(client, e["order_no"]) is None


async def test_a_refused_batch_leaves_its_orders_free_for_a_later_valid_batch(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    refused = await client.post("/sync-executions/batch", json=_with(2, mall="ebay"))
    assert refused.status_code == 422, refused.text

    body = await batch_ok(client, _valid_batch())

    assert body["counts"] == {RECORDED: 3, ALREADY: 0, NOT_REGISTERED: 0}
    assert await quantities(client, "A", "B") == {"A": 6, "B": 7}


async def test_a_batch_of_1000_executions_is_accepted(client: AsyncClient) -> None:
    await put_stock(client, "A", 0)
    body = await batch_ok(client, [execution(rakuten(n), {"A": 1}) for n in range(1, 1001)])
    assert body["counts"] == {RECORDED: 1000, ALREADY: 0, NOT_REGISTERED: 0}
    assert (await quantities(client, "A"))["A"] == -1000


# --- one sku across the orders of a batch ---------------------------------------------------


async def test_lines_on_one_sku_across_orders_ledger_a_running_quantity_and_keep_the_books(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 4)
    await sync(client, rakuten(9), {"A": 1})  # A 10 -> 9 before the batch

    await batch_ok(
        client,
        [
            execution(rakuten(1), {"A": 3}),
            execution(rakuten(2), {"B": 1, "A": 2}),
            execution(rakuten(3), {"GHOST": 1, "A": 50}),  # not recorded: moves nothing
            execution(rakuten(4), {"A": 4, "B": 1}),
            execution(rakuten(5), {"A": 5}),  # oversells: 0 -> -5
        ],
    )

    assert await sync_moves(client, "A") == [
        (-1, 9, rakuten(9)),
        (-3, 6, rakuten(1)),
        (-2, 4, rakuten(2)),
        (-4, 0, rakuten(4)),
        (-5, -5, rakuten(5)),
    ]
    assert await sync_moves(client, "B") == [(-1, 3, rakuten(2)), (-1, 2, rakuten(4))]
    for sku in ("A", "B"):
        await assert_ledger_runs_to_the_quantity(client, sku)
    await assert_books_balance(db)


# --- the single route beside the batch ------------------------------------------------------


async def test_an_order_recorded_by_a_batch_is_409_on_the_single_route_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await batch_ok(client, [execution(rakuten(1), {"A": 2})])
    stored = await recorded_execution(client, rakuten(1))
    movements_before = await count_rows(db, stock_movements)

    response = await client.post("/sync-executions", json=execution(rakuten(1), {"A": 5}))

    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert (await quantities(client, "A"))["A"] == 8
    assert await count_rows(db, stock_movements) == movements_before
    assert await recorded_execution(client, rakuten(1)) == stored


async def test_an_order_recorded_by_the_single_route_is_already_recorded_in_a_batch(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    created = await client.post("/sync-executions", json=execution(rakuten(1), {"A": 2}))
    assert created.status_code == 201, created.text
    movements_before = await count_rows(db, stock_movements)

    body = await batch_ok(
        client, [execution(rakuten(2), {"A": 1}), execution(rakuten(1), {"A": 5})]
    )

    assert body["results"] == [result(rakuten(2), RECORDED), result(rakuten(1), ALREADY)]
    assert (await quantities(client, "A"))["A"] == 7
    assert await count_rows(db, stock_movements) == movements_before + 1
    assert items_of(await recorded_execution(client, rakuten(1))) == {"A": 2}


async def test_an_order_refused_in_a_batch_for_an_unregistered_sku_can_be_recorded_later(
    client: AsyncClient,
) -> None:
    await put_stock(client, "A", 10)
    body = await batch_ok(client, [execution(rakuten(1), {"A": 1, "LATE": 1})])
    assert body["results"] == [result(rakuten(1), NOT_REGISTERED, ["LATE"])]
    await put_stock(client, "LATE", 5)

    created = await client.post("/sync-executions", json=execution(rakuten(1), {"A": 1, "LATE": 1}))

    assert created.status_code == 201, created.text
    assert await quantities(client, "A", "LATE") == {"A": 9, "LATE": 4}


# --- concurrency ----------------------------------------------------------------------------

STORM_SKUS = [f"S{i}" for i in range(6)]
STORM_START = 1000
GHOST_ORDERS = {rakuten(900): {"S1": 1, "GHOST": 1}, rakuten(901): {"GHOST": 2}}
RECORDED_BEFORE = rakuten(902)


def _storm_orders() -> dict[str, dict[str, int]]:
    """40 orders of 1-3 lines over 6 skus: every pair of batches shares skus and orders."""
    rng = random.Random(20260525)
    return {
        rakuten(n): {sku: rng.randint(1, 3) for sku in rng.sample(STORM_SKUS, rng.randint(1, 3))}
        for n in range(1, 41)
    }


def _storm_batches(count: int) -> list[list[Json]]:
    """Overlapping batches of 20-43 executions, each in its own order; the first two hold
    every order, in opposite orders."""
    rng = random.Random(count)
    pool = {**_storm_orders(), **GHOST_ORDERS, RECORDED_BEFORE: {"S0": 1}}
    every = [execution(n, items) for n, items in pool.items()]
    batches = [every, every[::-1]]
    while len(batches) < count:
        batches.append(rng.sample(every, rng.randint(20, len(every))))
    return batches


async def _seed_storm(client: AsyncClient) -> None:
    for sku in STORM_SKUS:
        await put_stock(client, sku, STORM_START)
    await sync(client, RECORDED_BEFORE, {"S0": 1})


async def _assert_each_order_recorded_once(
    responses: Sequence[Response], client: AsyncClient, db: Database
) -> None:
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text for r in responses if r.status_code != 200
    ][:3]
    orders = _storm_orders()
    codes: dict[str, Counter[str]] = {}
    for response in responses:
        body = response.json()
        assert sum(body["counts"].values()) == len(body["results"])
        assert Counter(r["code"] for r in body["results"]) == Counter(
            {code: n for code, n in body["counts"].items() if n}
        )
        for r in body["results"]:
            codes.setdefault(r["order_no"], Counter())[r["code"]] += 1
    for order_no, seen in codes.items():
        if order_no in orders:  # exactly one answer across all batches recorded it
            assert seen[RECORDED] == 1 and set(seen) <= {RECORDED, ALREADY}, (order_no, seen)
        elif order_no in GHOST_ORDERS:
            assert set(seen) == {NOT_REGISTERED}, (order_no, seen)
        else:
            assert set(seen) == {ALREADY}, (order_no, seen)
    assert set(orders) <= set(codes)

    deducted = Counter[str]()
    for items in orders.values():
        deducted.update(items)
    deducted["S0"] += 1  # RECORDED_BEFORE
    assert await quantities(client, *STORM_SKUS) == {
        sku: STORM_START - deducted[sku] for sku in STORM_SKUS
    }
    assert await count_rows(db, sync_executions) == len(orders) + 1
    assert len(await ledger(db, "sync_execution")) == sum(map(len, orders.values())) + 1
    for sku in STORM_SKUS:
        await assert_ledger_runs_to_the_quantity(client, sku)
    for order_no, items in orders.items():
        assert items_of(await recorded_execution(client, order_no)) == items
    await assert_books_balance(db)


async def arrive_together(
    monkeypatch: pytest.MonkeyPatch, apps: Sequence[FastAPI], parties: int
) -> None:
    """Hold each batch at the store until ``parties`` of them are there, then let all go.

    In one event loop a batch's parsing takes longer than its statement, and a PostgreSQL
    connection takes longer to open than a batch takes to commit: without the gate and
    open connections the batches would reach the database one after another, never racing.
    """
    gate = asyncio.Barrier(parties)
    for application in apps:
        store = application.state.store
        if isinstance(store, PostgresStore):
            pool = await store.pool()
            held = [await pool.acquire() for _ in range(parties)]
            for connection in held:
                await pool.release(connection)
        record = store.record_sync_executions

        async def gated(scope: Any, executions: Any, now: Any, record: Any = record) -> Any:
            async with asyncio.timeout(10):
                await gate.wait()
            return await record(scope, executions, now)

        monkeypatch.setattr(store, "record_sync_executions", gated)


async def test_concurrent_overlapping_batches_record_each_order_once_without_errors(
    app: FastAPI,
    second_app: FastAPI,
    client: AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _seed_storm(client)
    batches = _storm_batches(8)
    await arrive_together(monkeypatch, [app, second_app], len(batches))

    async with AsyncClient(
        transport=ASGITransport(app=second_app), base_url="http://second"
    ) as other:
        responses = await asyncio.gather(
            *(post_batch((client, other)[i % 2], b) for i, b in enumerate(batches))
        )

    await _assert_each_order_recorded_once(responses, client, db)


async def _until_waiting_on_locks(db: Database, count: int, storm: asyncio.Future[Any]) -> None:
    """Return once ``count`` statements of the service wait on a row lock."""
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND application_name = 'restock-service'"
    )
    async with asyncio.timeout(15):
        while True:
            async with db.engine.connect() as conn:  # a transaction sees one activity snapshot
                if (await conn.execute(waiting)).scalar_one() >= count:
                    return
            assert not storm.done(), "a batch answered while the stock rows were held"
            await asyncio.sleep(0.02)


@pytest.mark.processes
async def test_overlapping_batch_storm_across_two_server_processes_records_each_order_once(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, db = pg_client
    await _seed_storm(client)
    batches = _storm_batches(16)

    with running_servers(pg_database_url, 2) as urls:
        async with httpx.AsyncClient(timeout=30) as http:
            # While this transaction holds the storm's stock rows, every batch starts its
            # statement and waits: they all race from the same moment, on both servers.
            async with db.engine.begin() as holder:
                await holder.execute(
                    sa.select(stock.c.sku).where(stock.c.sku.in_(STORM_SKUS)).with_for_update()
                )
                storm = asyncio.ensure_future(
                    asyncio.gather(
                        *(
                            http.post(
                                f"{urls[i % 2]}/sync-executions/batch", json={"executions": b}
                            )
                            for i, b in enumerate(batches)
                        )
                    )
                )
                await _until_waiting_on_locks(db, len(batches), storm)
            responses = await storm

    await _assert_each_order_recorded_once(responses, client, db)
