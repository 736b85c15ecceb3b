"""RestockClient against the real service on SQLite and PostgreSQL, losing answers on the way.

The transport below hands each request to the app, which commits and answers; for the first
``lose`` requests it then drops the answer and raises ``httpx.ReadError``, as a connection
reset after the server answered would. The client retries with the call's Idempotency-Key
and must come back with the first answer, and the stock must have moved once.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from restock_client import Code, Line, OrderCancel, Outcome, RestockClient, RestockUnavailable
from tests.helpers import Database, ledger, put_stock, quantity, rakuten, repeat_requests, sync


class LosingAnswers(httpx.AsyncBaseTransport):
    """The app behind ASGITransport; the answers to the first ``lose`` requests are lost."""

    def __init__(self, app: FastAPI, lose: int) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lose = lose
        self.requests: list[httpx.Request] = []
        self.lost: list[httpx.Response] = []  # what the app answered, that never arrived

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        await response.aread()  # the app has run to its end: committed and answered
        if len(self.requests) <= self.lose:
            self.lost.append(response)
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def no_sleep(_: float) -> None:
    pass


@asynccontextmanager
async def restock_client(
    transport: httpx.AsyncBaseTransport, **kw: int
) -> AsyncIterator[RestockClient]:
    async with RestockClient(
        base_url="http://test", transport=transport, sleep=no_sleep, **kw
    ) as restock:
        yield restock


async def test_a_restock_whose_answer_was_lost_returns_the_first_answer(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 10)
    await sync(client, rakuten(1), {"A": 3, "B": 1})
    transport = LosingAnswers(app, lose=1)

    async with restock_client(transport) as restock:
        got = await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])

    (lost,) = transport.lost
    assert lost.status_code == 200 and lost.json()["results"][0]["code"] == "restored"
    assert got.attempts == 2
    assert got.replayed is True
    (a,) = got.results
    assert (a.code, a.outcome) == (Code.RESTORED, Outcome.SUCCESS)  # not already_restored
    assert a.items == [Line("A", 3), Line("B", 1)]
    assert (got.counts.success, got.counts.skip, got.counts.fail) == (1, 0, 0)
    assert got.messages == lost.json()["messages"]
    keys = {r.headers["Idempotency-Key"] for r in transport.requests}
    assert keys == {got.idempotency_key}
    assert await quantity(client, "A") == 10
    assert await quantity(client, "B") == 10
    assert await ledger(db, "restock") == [("A", 3, rakuten(1)), ("B", 1, rakuten(1))]
    assert await repeat_requests(db, rakuten(1)) == 0  # a replay is not a repeat


async def test_an_adjustment_whose_answer_was_lost_returns_the_first_answer(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    transport = LosingAnswers(app, lose=1)

    async with restock_client(transport) as restock:
        got = await restock.adjust("A", 5, "棚卸し", rakuten(7))

    (lost,) = transport.lost
    assert lost.status_code == 200 and lost.json()["quantity"] == 15
    assert (got.sku, got.quantity) == ("A", 15)
    assert got.updated_at == datetime.fromisoformat(lost.json()["updated_at"])
    assert (got.replayed, got.attempts) == (True, 2)
    assert await quantity(client, "A") == 15
    assert await ledger(db, "adjustment") == [("A", 5, rakuten(7))]


async def test_two_adjust_calls_with_the_same_arguments_move_stock_twice(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    transport = LosingAnswers(app, lose=0)

    async with restock_client(transport) as restock:
        first = await restock.adjust("A", 5, "棚卸し")
        second = await restock.adjust("A", 5, "棚卸し")

    assert first.idempotency_key != second.idempotency_key
    assert (first.quantity, first.replayed) == (15, False)
    assert (second.quantity, second.replayed) == (20, False)
    assert await quantity(client, "A") == 20
    assert await ledger(db, "adjustment") == [("A", 5, None), ("A", 5, None)]


async def test_a_second_restock_call_for_the_same_order_is_a_genuine_repeat(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 3})
    transport = LosingAnswers(app, lose=0)

    async with restock_client(transport) as restock:
        first = await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])
        second = await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])

    assert first.results[0].code is Code.RESTORED
    assert second.results[0].code is Code.ALREADY_RESTORED
    assert second.replayed is False and second.idempotency_key != first.idempotency_key
    assert await quantity(client, "A") == 10
    assert await ledger(db, "restock") == [("A", 3, rakuten(1))]
    assert await repeat_requests(db, rakuten(1)) == 1


async def test_a_call_sent_again_with_its_key_after_the_attempts_ran_out_gets_the_first_answer(
    app: FastAPI, client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 3})
    transport = LosingAnswers(app, lose=2)

    async with restock_client(transport, max_attempts=2) as restock:
        with pytest.raises(RestockUnavailable) as caught:
            await restock.restock("rakuten", [OrderCancel(rakuten(1), True)])
        assert caught.value.outcome_unknown is True
        key = caught.value.idempotency_key
        assert key is not None
        got = await restock.restock("rakuten", [OrderCancel(rakuten(1), True)], idempotency_key=key)

    assert [r.json()["results"][0]["code"] for r in transport.lost] == ["restored", "restored"]
    assert transport.lost[1].headers["Idempotent-Replayed"] == "true"
    assert got.replayed is True and got.idempotency_key == key
    assert got.results[0].code is Code.RESTORED and got.results[0].items == [Line("A", 3)]
    assert await quantity(client, "A") == 10
    assert await ledger(db, "restock") == [("A", 3, rakuten(1))]
