"""SIGTERM: the server stops taking connections and finishes the requests in flight."""

import asyncio
import signal
import time

import asyncpg
import httpx
import pytest
from httpx import AsyncClient

from tests.helpers import Database, order, put_stock, quantity, rakuten, sync
from tests.servers import Server

pytestmark = pytest.mark.processes


async def _until(predicate: "object", timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_sigterm_finishes_the_request_in_flight_and_refuses_new_connections(
    pg_database_url: str, pg_client: tuple[AsyncClient, Database]
) -> None:
    client, _ = pg_client
    await put_stock(client, "A", 5)
    await sync(client, rakuten(1), {"A": 2})
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    blocker = await asyncpg.connect(dsn)
    server = Server(pg_database_url).start()
    try:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute("SELECT 1 FROM stock WHERE sku = 'A' FOR UPDATE")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            in_flight = asyncio.ensure_future(
                http.post(
                    "/restocks",
                    json={"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]},
                )
            )

            async def waiting_on_the_lock() -> bool:
                # Inside its transaction the blocker would see one cached snapshot of the
                # statistics: ask for a fresh one every time.
                await blocker.execute("SELECT pg_stat_clear_snapshot()")
                return bool(
                    await blocker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )

            await _until(waiting_on_the_lock)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)

            async def refusing() -> bool:
                try:
                    async with httpx.AsyncClient(timeout=1) as fresh:
                        await fresh.get(f"{server.url}/health")
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    return True  # refused, or closed unanswered from the closing backlog
                return False

            await _until(refusing)
            assert not in_flight.done()
            await hold.rollback()
            response = await in_flight

        assert response.status_code == 200
        assert response.json()["results"][0]["code"] == "restored"
        # A stop that was asked for ends with 0, with one worker as with several.
        assert server.process.wait(timeout=15) == 0
    finally:
        await blocker.close()
        server.close()
    assert await quantity(client, "A") == 5
