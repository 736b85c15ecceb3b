"""Deadlocks are retried inside the service, a bounded number of times (retry.Runner)."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from httpx import AsyncClient

from restock_service.faults import is_database_unavailable
from restock_service.retry import Runner
from tests.helpers import Database, put_stock, quantity


@pytest.fixture
async def other_session(pg_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another client; it outwaits us, so PostgreSQL picks our transaction as the victim."""
    conn = await asyncpg.connect(pg_database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute("SET deadlock_timeout = '10s'")
    try:
        yield conn
    finally:
        await conn.close()


async def _deadlocked_once(
    db: Database, other: asyncpg.Connection, attempts_allowed: int
) -> tuple[int, object]:
    """Run a write whose first attempt deadlocks with ``other``; return attempts and result."""
    runner = Runner(attempts=attempts_allowed, deadline_s=10)
    ours = await asyncpg.connect(db.settings.database_url.replace("+asyncpg", ""))
    attempts = 0
    holds_x = asyncio.Event()
    tx = other.transaction()
    await tx.start()
    await other.execute("SELECT 1 FROM stock WHERE sku = 'Y' FOR UPDATE")

    async def work() -> int:
        nonlocal attempts
        attempts += 1
        async with ours.transaction():
            if attempts == 1:
                await ours.execute("SET LOCAL deadlock_timeout = '50ms'")
                await ours.execute("SELECT 1 FROM stock WHERE sku = 'X' FOR UPDATE")
                holds_x.set()
                await asyncio.sleep(0.2)  # let the other session queue for X
                await ours.execute("SELECT 1 FROM stock WHERE sku = 'Y' FOR UPDATE")
            await ours.execute("UPDATE stock SET quantity = quantity + 1 WHERE sku = 'X'")
        return attempts

    async def other_side() -> None:
        await holds_x.wait()
        await other.execute("SELECT 1 FROM stock WHERE sku = 'X' FOR UPDATE")
        await tx.commit()

    writing = asyncio.ensure_future(runner.run(work, lambda exc: getattr(exc, "sqlstate", None)))
    try:
        await other_side()
        result: object = await writing
    except asyncpg.PostgresError as exc:
        result = exc
    finally:
        await ours.close()
    return attempts, result


async def test_a_deadlock_is_retried_and_the_caller_never_sees_it(
    pg_client: tuple[AsyncClient, Database], other_session: asyncpg.Connection
) -> None:
    client, db = pg_client
    await put_stock(client, "X", 0)
    await put_stock(client, "Y", 0)

    attempts, result = await _deadlocked_once(db, other_session, attempts_allowed=3)

    assert (attempts, result) == (2, 2)
    assert await quantity(client, "X") == 1


async def test_retries_are_bounded_and_the_last_deadlock_means_503(
    pg_client: tuple[AsyncClient, Database], other_session: asyncpg.Connection
) -> None:
    client, db = pg_client
    await put_stock(client, "X", 0)
    await put_stock(client, "Y", 0)

    attempts, result = await _deadlocked_once(db, other_session, attempts_allowed=1)

    assert attempts == 1
    assert isinstance(result, asyncpg.PostgresError)
    assert result.sqlstate == "40P01"
    assert is_database_unavailable(result)  # answered 503 with Retry-After
    assert await quantity(client, "X") == 0
