"""SQLite and PostgreSQL answer every generated history alike and end in the same state.

Hypothesis generates histories of writes over a small universe (4 skus, 5 Rakuten order
numbers, the malls rakuten and yahoo, so that every restock rule can fire). Each history is
replayed through the HTTP API on two apps, one on an SQLite file and one on a PostgreSQL
database, both migrated once for the module and emptied before every example. Every answer
(status, media type, body; headers aside) is compared step by step, with the times the
service stamps, ids and cursors reduced to their shape; then the state read back through the
API at the end; then the books of both must balance. A failure names the step or the read,
the differing fields, both answers and the history.
"""

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from restock_service.api import create_app
from restock_service.books import check_books
from restock_service.config import Settings
from restock_service.migrations import migrate
from tests.conftest import database_for, empty_tables, migrated_pg_database
from tests.helpers import Database, rakuten

SKUS = ("A", "B", "C", "D")
ORDERS = tuple(rakuten(n) for n in range(1, 6))  # 354396-20260525-0000000001 …
MALLS = ("rakuten", "yahoo")  # any order number is a valid Yahoo one: mall_mismatch happens

# Sync executions carry none (the service stamps now) or one of these, which must come back
# as the same instant in the same spelling on both backends.
EXECUTED_AT = ("2026-05-25T10:00:00+09:00", "2026-05-25T10:00:00.5-05:30")
FIXED_INSTANTS = frozenset(datetime.fromisoformat(value) for value in EXECUTED_AT)

# Keys whose values differ from run to run; they are compared by shape only.
TIMES = frozenset(
    {
        "updated_at",
        "executed_at",
        "recorded_at",
        "requested_at",
        "completed_at",
        "resolved_at",
        "at",
        "changed_at",
    }
)
IDS = frozenset({"id"})
CURSORS = frozenset({"next_cursor"})


class Call(NamedTuple):
    """One request of a history."""

    method: str
    path: str
    body: dict[str, Any] | None = None


mostly_true = st.sampled_from((True, True, True, False))
quantities = st.integers(0, 20)
deltas = st.builds(lambda size, down: -size if down else size, st.integers(1, 5), st.booleans())
KINDS = ("put", "delete", "adjust", "sync", "sync", "restock", "restock", "resolve")


def _some(draw: st.DrawFn, likely: list[str], universe: tuple[str, ...], most: int) -> list[str]:
    """1 to `most` distinct values, mostly from `likely` (when there are any)."""
    pool = likely if likely and draw(mostly_true) else list(universe)
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=most, unique=True))


@st.composite
def histories(draw: st.DrawFn) -> list[Call]:
    """Most skus registered, then up to 21 calls of any kind over the small universe.

    Every call is possible at every step, but sync executions mostly name registered skus,
    restocks mostly name synced orders on the mall of their sync, and resolutions mostly
    name orders sent in restocks, so that the restock rules past no_sync_history fire
    often. What is likely is tracked loosely (a rough guess of the service's state); the
    apps decide what actually happens.
    """
    calls = [
        Call("PUT", f"/stock/{sku}", {"quantity": draw(quantities)})
        for sku in SKUS
        if draw(mostly_true)
    ]
    registered = {call.path.removeprefix("/stock/") for call in calls}
    synced: dict[str, str] = {}  # order_no: the mall of its first sync attempt
    cancelled: list[str] = []
    for _ in range(draw(st.integers(0, 21))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "put":
            sku = draw(st.sampled_from(SKUS))
            calls.append(Call("PUT", f"/stock/{sku}", {"quantity": draw(quantities)}))
            registered.add(sku)
        elif kind == "delete":
            sku = draw(st.sampled_from(SKUS))
            calls.append(Call("DELETE", f"/stock/{sku}"))
            registered.discard(sku)
        elif kind == "adjust":
            sku = draw(st.sampled_from(SKUS))
            body = {"delta": draw(deltas), "reason": "test"}
            calls.append(Call("POST", f"/stock/{sku}/adjustments", body))
        elif kind == "sync":
            # One execution, or a batch of one to three (POST /sync-executions/batch).
            executions = []
            for order_no in _some(draw, [], ORDERS, draw(st.sampled_from((1, 1, 2, 3)))):
                items = [
                    {"sku": sku, "quantity": draw(st.integers(1, 5))}
                    for sku in _some(draw, sorted(registered), SKUS, 3)
                ]
                mall = draw(st.sampled_from(MALLS))
                body = {"order_no": order_no, "mall": mall, "items": items}
                executed_at = draw(st.none() | st.sampled_from(EXECUTED_AT))
                if executed_at is not None:
                    body["executed_at"] = executed_at
                executions.append(body)
                synced.setdefault(order_no, mall)
            if len(executions) == 1 and draw(st.booleans()):
                calls.append(Call("POST", "/sync-executions", executions[0]))
            else:
                calls.append(Call("POST", "/sync-executions/batch", {"executions": executions}))
        elif kind == "restock":
            order_nos = _some(draw, list(synced), ORDERS, 3)
            first = synced.get(order_nos[0])
            mall = first if first and draw(mostly_true) else draw(st.sampled_from(MALLS))
            restore = draw(mostly_true)
            orders = [
                {"order_no": order_no, "mall_cancel_succeeded": draw(mostly_true)}
                for order_no in order_nos
            ]
            body = {"mall": mall, "restore_stock": restore, "orders": orders}
            calls.append(Call("POST", "/restocks", body))
            cancelled += [order_no for order_no in order_nos if order_no not in cancelled]
        else:
            (order_no,) = _some(draw, cancelled, ORDERS, 1)
            body = {"note": "n", "resolved_by": "t"}
            calls.append(Call("POST", f"/restocks/{order_no}/resolution", body))
    return calls


# What is read back at the end: every sku, its ledger, every order's restock and execution,
# and the two listings. Page sizes hold the whole of any generated history.
END_STATE_READS = (
    *(Call("GET", f"/stock/{sku}") for sku in SKUS),
    *(Call("GET", f"/stock/{sku}/movements?limit=500") for sku in SKUS),
    *(Call("GET", f"/restocks/{order_no}") for order_no in ORDERS),
    *(Call("GET", f"/sync-executions/{order_no}") for order_no in ORDERS),
    Call("GET", "/restocks?limit=500"),
    Call("GET", "/stock-changes?limit=500"),
)


@pytest.fixture(scope="module")
def backend_urls(
    pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """One migrated SQLite file and one migrated PostgreSQL database for all examples."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('agree') / 'restock.db'}"
    migrate(Settings(database_url=sqlite_url))
    with migrated_pg_database(pg_admin_dsn) as pg_url:
        yield {"sqlite": sqlite_url, "postgresql": pg_url}


def _time_shape(value: Any) -> str:
    """A time the service stamped as "<time>"; one the history sent, as it came back."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return f"<not a time: {value!r}>"
    if moment.tzinfo is None:
        return "<time without offset>"
    return str(value) if moment in FIXED_INSTANTS else "<time>"


def normalized(value: Any, key: str | None = None) -> Any:
    """The value with times, ids and cursors replaced by their shape (null stays null)."""
    if isinstance(value, dict):
        return {k: normalized(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if value is None:
        return None
    if key in TIMES:
        return _time_shape(value)
    if key in IDS:
        return "<id>"
    if key in CURSORS:
        return "<cursor>"
    return value


Answer = dict[str, Any]


async def answer(
    client: httpx.AsyncClient, call: Call, headers: dict[str, str] | None = None
) -> Answer:
    """Status, media type and normalized body of the call's answer (headers aside)."""
    response = await client.request(call.method, call.path, json=call.body, headers=headers)
    media_type = response.headers.get("content-type", "").split(";")[0]
    body: Any = None
    if response.content:
        body = normalized(response.json()) if media_type.endswith("json") else response.text
    return {"status": response.status_code, "type": media_type, "body": body}


async def _started(stack: AsyncExitStack, url: str) -> tuple[Database, httpx.AsyncClient]:
    """An app over emptied tables, its lifespan running in this loop, and its client."""
    app = create_app(Settings(database_url=url))
    db = await stack.enter_async_context(database_for(url))
    await stack.enter_async_context(app.router.lifespan_context(app))
    await empty_tables(db)
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    )
    return db, client


async def _books(db: Database) -> tuple[int, int, tuple[str, ...]]:
    async with db.engine.connect() as conn:
        report = await check_books(conn)
    return report.skus, report.restored, report.problems


def _count(call: Call, seen: Answer) -> None:
    """What the example reached, for --hypothesis-show-statistics."""
    status, body = seen["status"], seen["body"]
    if call.path == "/restocks" and status == 200:
        for result in body["results"]:
            event(f"restock: {result['code']}")
    else:
        event(f"{call.method} {call.path.split('/')[1]}...: {status}")


async def _end_state(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> dict[str, Answer]:
    return {f"{c.method} {c.path}": await answer(client, c, headers) for c in END_STATE_READS}


async def _feed_horizon_passed(pg_admin_dsn: str, timeout_s: float = 30.0) -> None:
    """Wait until every transaction begun before now, in any database of the server, ended.

    On PostgreSQL `GET /stock-changes` shows only the changes of transactions below the
    server-wide snapshot horizon (README: a long transaction in any database of that server
    delays the feed), and other test runs may share the server. Once the horizon passes
    a transaction id taken after the history, the feed must show the whole history.
    """
    conn = await asyncpg.connect(pg_admin_dsn, timeout=5)
    try:
        mark = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
        horizon = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await conn.fetchval(horizon) <= mark:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"a transaction elsewhere on the PostgreSQL server held the feed horizon "
                    f"below {mark} for {timeout_s} s"
                )
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def _show(seen: Answer) -> str:
    return f"{seen['status']} {seen['type']} {json.dumps(seen['body'], ensure_ascii=False)}"


def _differences(left: Any, right: Any, where: str = "") -> list[str]:
    """Where two answers differ, as `path: left != right` lines."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [
            line
            for key in [*left, *(k for k in right if k not in left)]
            for line in _differences(
                left.get(key, "<absent>"),
                right.get(key, "<absent>"),
                f"{where}.{key}" if where else str(key),
            )
        ]
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        if len(left) != len(right):
            return [f"{where}: {len(left)} entries != {len(right)} entries"]
        return [
            line
            for i, (a, b) in enumerate(zip(left, right, strict=True))
            for line in _differences(a, b, f"{where}[{i}]")
        ]
    return [] if left == right else [f"{where}: {left!r} != {right!r}"]


def _history(calls: list[Call]) -> str:
    return "".join(
        f"  {step:2}. {call.method} {call.path}"
        + (f" {json.dumps(call.body)}" if call.body is not None else "")
        + "\n"
        for step, call in enumerate(calls, 1)
    )


def _assert_agree(what: str, on_sqlite: Any, on_pg: Any, shown: str, calls: list[Call]) -> None:
    __tracebackhide__ = True
    if on_sqlite != on_pg:
        raise AssertionError(
            f"SQLite and PostgreSQL disagree {what}\n"
            + "".join(
                f"  {line}  (SQLite != PostgreSQL)\n" for line in _differences(on_sqlite, on_pg)
            )
            + shown
            + f"the history:\n{_history(calls)}"
        )


async def replay_on_both(urls: dict[str, str], pg_admin_dsn: str, history: list[Call]) -> None:
    async with AsyncExitStack() as stack:
        sqlite_app, sqlite = await _started(stack, urls["sqlite"])
        pg_app, pg = await _started(stack, urls["postgresql"])

        event(f"length {len(history) // 5 * 5}+")
        for step, call in enumerate(history, 1):
            on_sqlite, on_pg = await asyncio.gather(answer(sqlite, call), answer(pg, call))
            _assert_agree(
                f"at step {step} of {len(history)}: {call.method} {call.path} "
                f"{json.dumps(call.body)}",
                on_sqlite,
                on_pg,
                f"SQLite:     {_show(on_sqlite)}\nPostgreSQL: {_show(on_pg)}\n",
                history[:step],
            )
            _count(call, on_sqlite)

        await _feed_horizon_passed(pg_admin_dsn)
        end_on_sqlite, end_on_pg = await asyncio.gather(_end_state(sqlite), _end_state(pg))
        _assert_agree(
            "on the state read back after the whole history",
            end_on_sqlite,
            end_on_pg,
            "".join(
                f"{read}\n  SQLite:     {_show(end_on_sqlite[read])}\n"
                f"  PostgreSQL: {_show(end_on_pg[read])}\n"
                for read in end_on_sqlite
                if end_on_sqlite[read] != end_on_pg[read]
            ),
            history,
        )

        sqlite_books, pg_books = await _books(sqlite_app), await _books(pg_app)
        assert sqlite_books[2] == (), f"the SQLite books do not balance: {sqlite_books[2]}"
        assert pg_books[2] == (), f"the PostgreSQL books do not balance: {pg_books[2]}"
        assert sqlite_books == pg_books, "(skus, restored restocks) differ between the backends"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_sqlite_and_postgresql_end_in_the_same_state_after_any_history(
    backend_urls: dict[str, str], pg_admin_dsn: str, history: list[Call]
) -> None:
    # One event loop per example: both apps' lifespans, requests and clean-up run in it.
    asyncio.run(replay_on_both(backend_urls, pg_admin_dsn, history))


# --- two merchants (contract v1.3) ----------------------------------------------------------

MERCHANTS = ("shop-a", "shop-b")


async def _run(
    url: str, pg_admin_dsn: str, steps: list[tuple[str, Call]]
) -> tuple[dict[str, list[Answer]], dict[str, dict[str, Answer]], tuple[str, ...]]:
    """Each merchant's answers in order, its state read back at the end, and the books'
    problems, after ``steps`` (merchant, call) on emptied tables."""
    async with AsyncExitStack() as stack:
        db, client = await _started(stack, url)
        for merchant_id in MERCHANTS:
            registered = await client.put(f"/merchants/{merchant_id}", json={"name": "n"})
            assert registered.status_code == 201, registered.text
        answers: dict[str, list[Answer]] = {m: [] for m in MERCHANTS}
        for merchant_id, call in steps:
            seen = await answer(client, call, {"Merchant-Id": merchant_id})
            answers[merchant_id].append(seen)
        if url.startswith("postgresql"):
            await _feed_horizon_passed(pg_admin_dsn)
        ends = {m: await _end_state(client, {"Merchant-Id": m}) for m in MERCHANTS}
        async with db.engine.connect() as conn:
            problems = (await check_books(conn)).problems
    return answers, ends, problems


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(a=histories(), b=histories(), data=st.data())
def test_two_merchants_interleaved_end_exactly_as_each_alone(
    backend_urls: dict[str, str],
    pg_admin_dsn: str,
    a: list[Call],
    b: list[Call],
    data: st.DataObject,
) -> None:
    """The same skus and order numbers at two merchants, their calls interleaved at random:
    each merchant's every answer, and its state at the end, are what it gets alone."""
    order = data.draw(st.permutations(["shop-a"] * len(a) + ["shop-b"] * len(b)))
    queues = {"shop-a": iter(a), "shop-b": iter(b)}
    interleaved = [(merchant_id, next(queues[merchant_id])) for merchant_id in order]
    for backend, url in backend_urls.items():
        together = asyncio.run(_run(url, pg_admin_dsn, interleaved))
        alone_a = asyncio.run(_run(url, pg_admin_dsn, [("shop-a", call) for call in a]))
        alone_b = asyncio.run(_run(url, pg_admin_dsn, [("shop-b", call) for call in b]))
        for merchant_id, alone, history in (("shop-a", alone_a, a), ("shop-b", alone_b, b)):
            for what, got, expected in (
                ("answers", together[0][merchant_id], alone[0][merchant_id]),
                ("state at the end", together[1][merchant_id], alone[1][merchant_id]),
            ):
                assert got == expected, (
                    f"{backend}: {merchant_id}'s {what} interleaved with the other merchant "
                    "differ from its own alone:\n"
                    + "".join(f"  {line}\n" for line in _differences(got, expected))
                    + f"its history:\n{_history(history)}"
                )
        assert together[2] == (), f"{backend}: the books do not balance: {together[2]}"
