"""Losing PostgreSQL: quick 503s with Retry-After, nothing half-written, recovery by itself."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from httpx import ASGITransport, AsyncClient

from restock_service import console
from restock_service.api import create_app
from restock_service.api.console import STYLESHEET_PATH
from restock_service.config import Settings
from restock_service.migrations import migrate
from tests.helpers import cancel, order, put_stock, quantity, rakuten, sign_in, sync
from tests.pgcluster import Cluster

# The contract's bar: a call answers within 5 s when the database is gone.
ANSWER_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def cluster(pg_admin_dsn: str) -> Iterator[Cluster]:
    """Our own PostgreSQL server (pg_admin_dsn: only so that CI=true demands PostgreSQL)."""
    own = Cluster()
    try:
        own.start()
        migrate(Settings(database_url=own.url))
        yield own
    finally:
        own.destroy()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    app = create_app(Settings(database_url=cluster.url))
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


@pytest.fixture
async def browser(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    """A browser signed in on the console of an app with keys."""
    app = create_app(Settings(database_url=cluster.url, api_keys="console-key-1:writer"))
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
    ):
        assert (await sign_in(c, "console-key-1")).status_code == 303
        assert (await c.get("/console")).status_code == 200
        yield c


async def _timed(call: "asyncio.Future[object] | object") -> tuple[object, float]:
    started = time.monotonic()
    result = await call  # type: ignore[misc]
    return result, time.monotonic() - started


async def test_stopped_database_answers_503_quickly_and_the_service_recovers_by_itself(
    cluster: Cluster, client: AsyncClient, browser: AsyncClient
) -> None:
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 4})
    await sync(client, rakuten(2), {"A": 1})

    cluster.stop()
    try:
        calls = [
            client.get("/stock/A"),
            cancel(client, [order(rakuten(1))]),
            client.put("/stock/B", json={"quantity": 1}),
            client.get("/ready"),
        ]
        for call in calls:
            response, elapsed = await _timed(call)
            assert response.status_code == 503, response.text  # type: ignore[attr-defined]
            assert int(response.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
            assert elapsed < ANSWER_WITHIN_S
        # The console says so on a page of its own; its stylesheet needs no database.
        page = await browser.get("/console")
        assert page.status_code == 503, page.text
        assert console.text("unavailable") in page.text
        assert int(page.headers["retry-after"]) >= 1
        assert (await browser.get(STYLESHEET_PATH)).status_code == 200
    finally:
        cluster.start()

    deadline = time.monotonic() + 20
    while (await client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.2)

    # Nothing of the refused restock was written; it goes through now, once.
    assert await quantity(client, "A") == 5
    body = (await cancel(client, [order(rakuten(1))])).json()
    assert body["results"][0]["code"] == "restored"
    assert await quantity(client, "A") == 9
    assert (await client.put("/stock/B", json={"quantity": 1})).status_code == 200


async def test_frozen_database_answers_503_within_the_bound_instead_of_hanging(
    cluster: Cluster, client: AsyncClient
) -> None:
    await put_stock(client, "F", 3)
    await sync(client, rakuten(3), {"F": 1})

    cluster.signal(signal.SIGSTOP)
    try:
        for call in [client.get("/stock/F"), cancel(client, [order(rakuten(3))])]:
            response, elapsed = await _timed(call)
            assert response.status_code == 503, response.text  # type: ignore[attr-defined]
            assert "retry-after" in response.headers  # type: ignore[attr-defined]
            assert elapsed < ANSWER_WITHIN_S
    finally:
        cluster.signal(signal.SIGCONT)

    deadline = time.monotonic() + 20
    while (await client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.2)
    body = (await cancel(client, [order(rakuten(3))])).json()
    assert body["results"][0]["code"] == "restored"
    assert await quantity(client, "F") == 3
