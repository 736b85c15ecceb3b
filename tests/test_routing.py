"""FastRoute (api/routing.py) answers every route exactly as FastAPI's own handler would.

The same script of requests runs twice over the same seeded data: once through the app as
served and once with every request left to FastAPI's handler. Every answer (status, content
type, body) must be the same, timestamps, ids and cursors aside.
"""

import re
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app, routing
from restock_service.config import Settings
from tests.conftest import database_for, empty_tables
from tests.helpers import amazon, order, put_stock, rakuten, sync

JSON = {"content-type": "application/json"}


def body(mall: str, *orders: dict[str, Any], restore: bool = True) -> dict[str, Any]:
    return {"mall": mall, "restore_stock": restore, "orders": list(orders)}


# A body that validates, for the content types FastAPI does not read as JSON.
VALID = (
    b'{"mall":"rakuten","restore_stock":false,'
    b'"orders":[{"order_no":"354396-20260525-0000000009","mall_cancel_succeeded":true}]}'
)

# (method, path, keyword arguments for httpx)
SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/restocks", {"json": body("rakuten", order(rakuten(1)))}),  # restored
    ("POST", "/restocks", {"json": body("rakuten", order(rakuten(1)))}),  # already restored
    (
        "POST",
        "/restocks",
        {
            "json": body(
                "rakuten",
                order(rakuten(2)),  # partly: one sku unregistered
                order(rakuten(3), succeeded=False, message="キャンセル不可"),
                order(rakuten(4)),  # never synced
            )
        },
    ),
    ("POST", "/restocks", {"json": body("rakuten", order(rakuten(6)), restore=False)}),
    ("POST", "/restocks", {"json": body("amazon", order(amazon(1)))}),
    # Invalid: FastAPI's 422s, and the rules' own (duplicates, order numbers of another mall).
    ("POST", "/restocks", {"json": body("rakuten", order(rakuten(7)), order(rakuten(7)))}),
    ("POST", "/restocks", {"json": body("rakuten", order(amazon(2)))}),
    ("POST", "/restocks", {"json": {"mall": "rakuten", "restore_stock": "yes", "orders": []}}),
    ("POST", "/restocks", {"json": {**body("rakuten", order(rakuten(8))), "extra": 1}}),
    ("POST", "/restocks", {"json": body("ebay", order(rakuten(8)))}),
    ("POST", "/restocks", {"content": b'{"mall": "rakuten", ', "headers": JSON}),
    ("POST", "/restocks", {"content": b"\xff\xfe{}", "headers": JSON}),
    ("POST", "/restocks", {"content": b"", "headers": JSON}),
    ("POST", "/restocks", {"content": VALID, "headers": {"content-type": "text/plain"}}),
    (
        "POST",
        "/restocks",
        {
            "content": b'{"mall":"rakuten","restore_stock":true,"orders":[]}',
            "headers": {"content-type": "application/merge-patch+json; charset=utf-8"},
        },
    ),
    (
        "POST",
        "/restocks",
        {"content": VALID, "headers": {"content-type": "application/x/y+json"}},  # text/plain
    ),
    ("GET", f"/restocks/{rakuten(1)}", {}),
    ("GET", f"/restocks/{rakuten(2)}", {}),
    ("GET", f"/restocks/{rakuten(4)}", {}),
    ("GET", f"/restocks/{rakuten(99)}", {}),  # 404
    ("GET", "/restocks/-starts-with-a-dash", {}),  # 422 from FastAPI
    ("GET", "/restocks/" + "9" * 65, {}),
    ("GET", f"/restocks/{rakuten(1)}%0A", {}),
    ("GET", f"/restocks/{rakuten(1)}/resolution", {}),  # not a route for GET
    ("PUT", f"/restocks/{rakuten(1)}", {}),
    ("DELETE", "/restocks", {}),
    # Every other route: answers, and the refusals of each kind of parameter.
    ("GET", "/restocks", {}),
    ("GET", "/restocks", {"params": {"status": "restored", "limit": 1}}),
    ("GET", "/restocks", {"params": {"status": "failed", "mall": "rakuten"}}),
    ("GET", "/restocks", {"params": {"limit": 0}}),
    ("GET", "/restocks", {"params": {"limit": "x"}}),
    ("GET", "/restocks", {"params": {"status": "lost"}}),
    ("GET", "/restocks", {"params": {"cursor": "forged"}}),
    ("GET", "/restocks", {"params": {"cursor": "x" * 513}}),
    ("GET", "/restocks", {"params": {"unknown": "ignored"}}),
    ("POST", f"/restocks/{rakuten(2)}/resolution", {"json": {"note": "n", "resolved_by": "t"}}),
    ("POST", f"/restocks/{rakuten(2)}/resolution", {"json": {"note": "n", "resolved_by": "t"}}),
    ("POST", f"/restocks/{rakuten(99)}/resolution", {"json": {"note": "n", "resolved_by": "t"}}),
    ("POST", f"/restocks/{rakuten(1)}/resolution", {"json": {"note": "", "resolved_by": "t"}}),
    ("PUT", "/stock/D", {"json": {"quantity": 5}}),
    ("PUT", "/stock/D", {"json": {"quantity": -1}}),
    ("PUT", "/stock/D", {"json": {"quantity": 1.0}}),
    ("PUT", "/stock/D%2F1", {"json": {"quantity": 1}}),
    ("PUT", "/stock/D", {"content": b'{"quantity": 1}', "headers": {"content-type": "text/plain"}}),
    ("PUT", "/stock/D", {"content": b'{"quantity": 1}'}),  # no content type: not JSON
    ("POST", "/restocks", {"content": VALID}),
    ("GET", "/stock/D", {}),
    ("GET", "/stock/NOPE", {}),
    ("POST", "/stock/D/adjustments", {"json": {"delta": 2, "reason": "count"}}),
    ("POST", "/stock/D/adjustments", {"json": {"delta": 0, "reason": "count"}}),
    ("POST", "/stock/NOPE/adjustments", {"json": {"delta": 1, "reason": "count"}}),
    ("GET", "/stock/D/movements", {}),
    ("GET", "/stock/D/movements", {"params": {"limit": 1}}),
    ("GET", "/stock/NOPE/movements", {}),
    ("GET", "/stock-changes", {"params": {"limit": 2}}),
    ("GET", "/stock-changes", {"params": {"after": "forged"}}),
    ("DELETE", "/stock/D", {}),
    ("DELETE", "/stock/D", {}),
    (
        "POST",
        "/sync-executions",
        {
            "json": {
                "order_no": rakuten(20),
                "mall": "rakuten",
                "items": [{"sku": "A", "quantity": 1}],
            }
        },
    ),
    (
        "POST",
        "/sync-executions",
        {
            "json": {
                "order_no": rakuten(20),
                "mall": "rakuten",
                "items": [{"sku": "A", "quantity": 1}],
            }
        },
    ),
    (
        "POST",
        "/sync-executions",
        {
            "json": {
                "order_no": rakuten(21),
                "mall": "rakuten",
                "items": [{"sku": "NOPE", "quantity": 1}],
            }
        },
    ),
    (
        "POST",
        "/sync-executions",
        {"json": {"order_no": rakuten(22), "mall": "rakuten", "items": []}},
    ),
    (
        "POST",
        "/sync-executions/batch",
        {
            "json": {
                "executions": [
                    {
                        "order_no": rakuten(23),
                        "mall": "rakuten",
                        "items": [{"sku": "A", "quantity": 1}],
                    },
                    {
                        "order_no": rakuten(20),
                        "mall": "rakuten",
                        "items": [{"sku": "A", "quantity": 1}],
                    },
                    {
                        "order_no": amazon(5),
                        "mall": "amazon",
                        "items": [{"sku": "NOPE", "quantity": 1}],
                    },
                ]
            }
        },
    ),
    ("POST", "/sync-executions/batch", {"json": {"executions": []}}),
    ("GET", f"/sync-executions/{rakuten(20)}", {}),
    ("GET", f"/sync-executions/{rakuten(99)}", {}),
    ("GET", "/health", {}),
    ("GET", "/ready", {}),
]

_VOLATILE = re.compile(r'"(\w+_at|at|next_cursor)":"[^"]+"|"(id)":\d+')


async def _run(app: FastAPI, database_url: str) -> list[tuple[int, str, str]]:
    answers = []
    async with database_for(database_url) as db, app.router.lifespan_context(app):
        await empty_tables(db)
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            await put_stock(client, "A", 10)
            await put_stock(client, "B", 10)
            await sync(client, rakuten(1), {"A": 2, "B": 1})
            await put_stock(client, "C", 10)
            await sync(client, rakuten(2), {"A": 1, "C": 1})
            assert (await client.delete("/stock/C")).status_code == 204
            await sync(client, amazon(1), {"B": 3}, mall="amazon")
            for method, path, kwargs in SCRIPT:
                response = await client.request(method, path, **kwargs)
                answers.append(
                    (
                        response.status_code,
                        response.headers.get("content-type", ""),
                        _VOLATILE.sub(lambda m: f'"{m.group(1) or m.group(2)}":"…"', response.text),
                    )
                )
    return answers


async def test_fast_routes_answer_every_request_as_fastapi_does(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=database_url)
    taken: list[bool] = []
    planned = routing._values

    async def values(plan: Any, request: Any) -> Any:
        found = await planned(plan, request)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(routing, "_values", values)
    fast = await _run(create_app(settings), database_url)
    took_the_short_way = sum(taken)
    reference = await _run(create_app(settings, fast_routes=False), database_url)
    # Every answer of 2xx (and each 404 and 409 of a valid request) came the short way.
    assert took_the_short_way >= sum(200 <= status < 300 for status, _, _ in fast)
    for step, (sent, got, expected) in enumerate(zip(SCRIPT, fast, reference, strict=True)):
        assert got == expected, f"step {step}: {sent[0]} {sent[1]}"
    statuses = [status for status, _, _ in fast]
    # The script covers what it means to: answers, refusals, and the hand-overs to FastAPI.
    assert {200, 201, 204, 404, 405, 409, 422} <= set(statuses)
    assert statuses[:5] == [200] * 5


async def test_fast_routes_count_requests_under_their_route_templates(
    database_url: str,
) -> None:
    app = create_app(Settings(database_url=database_url))
    async with database_for(database_url) as db, app.router.lifespan_context(app):
        await empty_tables(db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as c:
            await c.post("/restocks", json=body("rakuten", order(rakuten(1)), restore=False))
            await c.get(f"/restocks/{rakuten(1)}")
            metrics = (await c.get("/metrics")).text
    assert re.search(r'method="POST",route="/restocks",status="200"', metrics), metrics
    assert re.search(r'method="GET",route="/restocks/\{order_no\}",status="404"', metrics)
