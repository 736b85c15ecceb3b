"""api/hot.py answers POST /restocks and GET /restocks/{order_no} exactly as FastAPI would.

The same script of requests runs twice over the same seeded data: once through the app as
served (hot paths on) and once through FastAPI's routes alone. Every answer (status, content
type, body) must be the same, timestamps and request ids aside.
"""

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.config import Settings
from tests.conftest import empty_tables
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
]

_TIMESTAMP = re.compile(r'"(\w+_at)":"[^"]+"')


async def _run(app: FastAPI) -> list[tuple[int, str, str]]:
    answers = []
    async with app.router.lifespan_context(app):
        await empty_tables(app.state.db)
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
                        _TIMESTAMP.sub(r'"\1":"…"', response.text),
                    )
                )
    return answers


@pytest.fixture
async def both(database_url: str) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    settings = Settings(database_url=database_url)
    yield create_app(settings), create_app(settings, hot_paths=False)


async def test_hot_paths_answer_as_fastapi_does(both: tuple[FastAPI, FastAPI]) -> None:
    served, reference = both
    hot = await _run(served)
    slow = await _run(reference)
    for step, (sent, got, expected) in enumerate(zip(SCRIPT, hot, slow, strict=True)):
        assert got == expected, f"step {step}: {sent[0]} {sent[1]}"
    statuses = [status for status, _, _ in hot]
    # The script covers what it means to: answers, refusals, and the hand-overs to FastAPI.
    assert {200, 404, 405, 422} <= set(statuses)
    assert statuses[:5] == [200] * 5


async def test_hot_paths_count_requests_under_their_route_templates(
    database_url: str,
) -> None:
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        await empty_tables(app.state.db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as c:
            await c.post("/restocks", json=body("rakuten", order(rakuten(1)), restore=False))
            await c.get(f"/restocks/{rakuten(1)}")
            metrics = (await c.get("/metrics")).text
    assert re.search(r'method="POST",route="/restocks",status="200"', metrics), metrics
    assert re.search(r'method="GET",route="/restocks/\{order_no\}",status="404"', metrics)
