"""Real databases for every test: SQLite and PostgreSQL, built by the Alembic migrations.

Each run creates its own throwaway PostgreSQL database and drops it at the end. With
CI=true an unreachable PostgreSQL fails the run; elsewhere its tests skip with the reason.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.migrations import migrate
from restock_service.tables import DEFAULT_MERCHANT, merchants, metadata
from tests.helpers import Database

PG_ADMIN_DSN = os.environ.get(
    "RESTOCK_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# `make test-fast` runs on SQLite alone (RESTOCK_TEST_BACKENDS=sqlite); CI runs on both.
BACKENDS = ["sqlite", "postgresql"]
ONLY = os.environ.get("RESTOCK_TEST_BACKENDS", ",".join(BACKENDS)).split(",")
RUN_ON = [b for b in BACKENDS if b in ONLY or IN_CI]

# The tests set what they need; a developer's own RESTOCK_* settings must not leak in.
TESTS_OWN = {"RESTOCK_TEST_PG_DSN", "RESTOCK_TEST_BACKENDS"}
for _name in [n for n in os.environ if n.startswith("RESTOCK_") and n not in TESTS_OWN]:
    del os.environ[_name]


def _pg_problem() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """The PostgreSQL server the tests create their databases on."""
    if "postgresql" not in ONLY and not IN_CI:
        pytest.skip("RESTOCK_TEST_BACKENDS leaves PostgreSQL out")
    problem = _pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true needs PostgreSQL at {PG_ADMIN_DSN}: {problem}", pytrace=False)
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({problem})")
    return PG_ADMIN_DSN


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def throwaway_pg_database(admin_dsn: str) -> tuple[str, str]:
    """Create an empty database; return its name and its service URL."""
    name = f"restock_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    base = admin_dsn.rsplit("/", 1)[0]
    return name, f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)


def drop_pg_database(admin_dsn: str, name: str) -> None:
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def migrated_pg_database(admin_dsn: str) -> Iterator[str]:
    """A throwaway PostgreSQL database at the current schema, dropped afterwards."""
    name, url = throwaway_pg_database(admin_dsn)
    try:
        migrate(Settings(database_url=url))
        yield url
    finally:
        drop_pg_database(admin_dsn, name)


@pytest.fixture(scope="session", params=RUN_ON)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of each backend, shared by the session's tests."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'restock.db'}"
        migrate(Settings(database_url=url))
        yield url
        return
    with migrated_pg_database(request.getfixturevalue("pg_admin_dsn")) as url:
        yield url


@pytest.fixture(params=RUN_ON)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each backend with nothing in it, not even a schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin = request.getfixturevalue("pg_admin_dsn")
    name, url = throwaway_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, name)


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


async def empty_tables(db: Database) -> None:
    """Every table as the migrations leave it: empty, but for the merchant ``default``."""
    async with db.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table is merchants:
                await conn.execute(table.delete().where(table.c.merchant_id != DEFAULT_MERCHANT))
            else:
                await conn.execute(table.delete())


@asynccontextmanager
async def database_for(database_url: str) -> AsyncIterator[Database]:
    """The tests' own way into a database: an engine beside the app's store."""
    settings = Settings(database_url=database_url)
    database = Database(create_engine(settings), settings)
    try:
        yield database
    finally:
        await database.engine.dispose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with database_for(database_url) as database:
        yield database


@pytest.fixture
async def app(database_url: str, db: Database) -> AsyncIterator[FastAPI]:
    """The application over empty tables, with its lifespan running."""
    application = create_app(Settings(database_url=database_url))
    async with application.router.lifespan_context(application):
        await empty_tables(db)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.fixture
async def second_app(app: FastAPI, database_url: str) -> AsyncIterator[FastAPI]:
    """Another application, with its own store (pool, lock), on the same database: what a
    second process would be, in this one."""
    other = create_app(Settings(database_url=database_url))
    async with other.router.lifespan_context(other):
        yield other


@pytest.fixture(scope="session")
def pg_database_url(pg_admin_dsn: str) -> Iterator[str]:
    """A migrated PostgreSQL database for the tests that exist only for PostgreSQL."""
    with migrated_pg_database(pg_admin_dsn) as url:
        yield url


@pytest.fixture
async def pg_client(pg_database_url: str) -> AsyncIterator[tuple[AsyncClient, Database]]:
    """An in-process client on the PostgreSQL-only database, its tables emptied."""
    application = create_app(Settings(database_url=pg_database_url))
    async with (
        database_for(pg_database_url) as db,
        application.router.lifespan_context(application),
    ):
        await empty_tables(db)
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as c:
            yield c, db
