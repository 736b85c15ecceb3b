"""Engines, explicit transactions and the schema-version check, for both dialects."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from restock_service.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs that mean "run the whole transaction again": serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# The server ended the session: admin_shutdown, crash_shutdown, cannot_connect_now.
LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
READ_ONLY = "restock_read_only"
# Keys of SQLAlchemy's asyncpg connect arguments that are SQLAlchemy's own, not asyncpg's.
_SQLALCHEMY_CONNECT_ARGS = ("prepared_statement_cache_size", "prepared_statement_name_func")


def create_engine(settings: Settings, *, pooled: bool = True, bounded: bool = True) -> AsyncEngine:
    """Create the async engine; on SQLite, take over BEGIN so writers begin IMMEDIATE.

    ``bounded=False`` drops the statement and command timeouts, for work that may rightly
    run long: migrations and ``check``.
    """
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
            **({} if pooled else {"poolclass": NullPool}),
        )
        _install_sqlite_hooks(engine, settings)
        return engine
    server_settings = _server_settings(settings, bounded)
    pool_args: dict[str, Any] = (
        {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_connect_timeout_s,
            # No pre-ping (a round trip per request): the first request on a dead connection
            # fails with 503, and SQLAlchemy then invalidates every pooled connection.
        }
        if pooled
        else {"poolclass": NullPool}
    )
    return create_async_engine(
        url,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            # Client-side bound for a server that accepts but never answers.
            "command_timeout": settings.db_deadline_s if bounded else None,
            "server_settings": server_settings,
        },
        **pool_args,
    )


def _server_settings(settings: Settings, bounded: bool) -> dict[str, str]:
    """Session settings for every PostgreSQL connection the service opens."""
    # No JIT: every statement of ours is short, and compiling one costs more than it saves.
    server_settings = {"application_name": "restock-service", "jit": "off"}
    if bounded and settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    return server_settings


async def _keep_session(_driver: asyncpg.Connection) -> None:
    """The hot path's pool hands connections back as they are, without asyncpg's reset query
    (a round trip per request): its statements leave no session state behind, and asyncpg
    still rolls back a connection left inside a transaction and drops a broken one."""


def _install_sqlite_hooks(engine: AsyncEngine, settings: Settings) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing its own (deferred) BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so what they read stays true until commit.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _forget(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned unit's failure is expected, not news

    return done


async def _pause_before_retry(attempt: int) -> None:
    """A short pause, longer each attempt and jittered, so that the transactions that
    collided do not collide again in step."""
    await asyncio.sleep(0.005 * attempt * (0.5 + random.random()))


def is_retryable(exc: DBAPIError) -> bool:
    """True for deadlocks and serialization failures, which a rerun resolves."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate in RETRYABLE_SQLSTATES


class Database:
    """The engine plus the two ways in: a write transaction and a read transaction."""

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or create_engine(settings)
        self.dialect = self.engine.dialect.name
        self._reader = read_only(self.engine)
        # SQLite has one writer at a time; queue this process's writers here instead of
        # letting them spin in SQLite's busy handler.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._abandoned: set[asyncio.Future[Any]] = set()
        # PostgreSQL: the hot path's own asyncpg pool, opened on first use (see ``drivers``).
        self._drivers: asyncpg.Pool | None = None
        self._drivers_opening = asyncio.Lock()

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction; rerun it on deadlock or serialization failure."""
        return await self._within_deadline(self._write_with_retries(work))

    async def _write_with_retries(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        attempts = self.settings.db_retry_attempts
        for attempt in range(1, attempts + 1):
            try:
                if self._write_lock is None:
                    return await self._run_write(work)
                async with self._write_lock:
                    return await self._run_write(work)
            except DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                log.info("transaction retried after %s (attempt %d)", exc.orig, attempt)
                await _pause_before_retry(attempt)
        raise AssertionError("unreachable")

    async def write_driver(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """PostgreSQL: run ``work`` on the pooled connection's asyncpg driver; rerun it on a
        deadlock or serialization failure.

        No transaction is opened: each statement is its own, so ``work`` must do its writing
        in one statement, after its reads (restock_pg.py does). The hot path's statements go
        to the driver as they are, with none of SQLAlchemy's per-statement work and no
        BEGIN and COMMIT round trips; pooling, the deadline and the retries stay the same.
        """
        return await self._within_deadline(self._driver_with_retries(work))

    async def _driver_with_retries(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        attempts = self.settings.db_retry_attempts
        pool = await self.drivers()
        for attempt in range(1, attempts + 1):
            async with pool.acquire(timeout=self.settings.db_connect_timeout_s) as driver:
                try:
                    return await work(driver)
                except asyncpg.PostgresError as exc:
                    await self._expire_if_lost(driver, exc)
                    if attempt == attempts or exc.sqlstate not in RETRYABLE_SQLSTATES:
                        raise
                    log.info("statement retried after %s (attempt %d)", exc, attempt)
                except (asyncpg.InterfaceError, OSError) as exc:
                    await self._expire_if_lost(driver, exc)
                    raise
            await _pause_before_retry(attempt)
        raise AssertionError("unreachable")

    async def read_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """PostgreSQL: run one-statement ``work`` on the asyncpg driver, without a transaction."""
        return await self._within_deadline(self._read_driver(work))

    async def _read_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        pool = await self.drivers()
        async with pool.acquire(timeout=self.settings.db_connect_timeout_s) as driver:
            try:
                return await work(driver)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                await self._expire_if_lost(driver, exc)
                raise

    async def drivers(self) -> asyncpg.Pool:
        """PostgreSQL: the pool of plain asyncpg connections that the hot path runs on.

        SQLAlchemy's pool costs about 0.1 ms of Python per checkout and checkin (greenlet
        hops, events, its reset); asyncpg's own pool, without its reset query, a third of
        that. It holds up to ``db_pool_size`` connections, beside the engine's pool for the
        other routes, opens them as they are needed and keeps them.
        """
        if self._drivers is None:
            async with self._drivers_opening:
                if self._drivers is None:
                    # Connect exactly as the engine does, URL query (ssl, …) included.
                    _, connect_args = self.engine.dialect.create_connect_args(self.engine.url)
                    for sqlalchemy_only in _SQLALCHEMY_CONNECT_ARGS:
                        connect_args.pop(sqlalchemy_only, None)
                    self._drivers = await asyncpg.create_pool(
                        **connect_args,
                        min_size=0,
                        max_size=self.settings.db_pool_size,
                        max_inactive_connection_lifetime=0,
                        timeout=self.settings.db_connect_timeout_s,
                        command_timeout=self.settings.db_deadline_s,
                        server_settings={
                            **_server_settings(self.settings, bounded=True),
                            # The hot statements are prepared once per connection (asyncpg's
                            # statement cache): plan them once too, not at every execution.
                            # Custom planning of their CTEs cost PostgreSQL about as much as
                            # running them.
                            "plan_cache_mode": "force_generic_plan",
                            # Every hot path statement is a keyed lookup. A generic plan made
                            # while a table was still small (a new install's empty restocks)
                            # would scan it whole at every request as it grows, until
                            # autovacuum's next ANALYZE replans: never plan a sequential scan.
                            "enable_seqscan": "off",
                        },
                        reset=_keep_session,
                    )
        return self._drivers

    def hot_pool_figures(self) -> tuple[int, int] | None:
        """The hot path pool's open and idle connections; None before it is opened."""
        if self._drivers is None:
            return None
        return self._drivers.get_size(), self._drivers.get_idle_size()

    async def _expire_if_lost(self, driver: Any, exc: Exception) -> None:
        """After a connection was lost, the pool's idle ones are replaced on their next use.

        They are likely lost too (a failover, a restart, a proxy gone) without their sockets
        showing it yet: expiring them means one request meets a lost connection, not one per
        pooled connection. A statement that merely failed or timed out expires nothing.
        """
        if isinstance(exc, asyncpg.PostgresError):
            sqlstate = exc.sqlstate or ""
            lost = sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_SQLSTATES
        else:
            lost = isinstance(exc, asyncpg.InterfaceError | ConnectionError)
        if (lost or driver.is_closed()) and self._drivers is not None:
            await self._drivers.expire_connections()

    async def _run_write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self.engine.begin() as conn:
            return await work(conn)

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one read-only transaction."""
        return await self._within_deadline(self._run_read(work))

    async def _run_read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._reader.begin() as conn:
            return await work(conn)

    async def _within_deadline(self, unit: Coroutine[Any, Any, T]) -> T:
        """Await ``unit`` for at most ``db_deadline_s``, however long its cleanup would take.

        Past the deadline the unit is cancelled and left to roll back in the background (a
        hung server can keep a rollback waiting), and the caller gets TimeoutError at once.
        """
        task = asyncio.ensure_future(unit)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.settings.db_deadline_s)
        except TimeoutError:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(_forget(self._abandoned))
            raise

    async def dispose(self) -> None:
        if self._drivers is not None:
            drivers, self._drivers = self._drivers, None
            try:  # a clean goodbye to each connection, unless the server does not answer
                await asyncio.wait_for(drivers.close(), self.settings.db_connect_timeout_s)
            except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                drivers.terminate()
        await self.engine.dispose()


# --- schema version -------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic scripts: packaged inside the wheel, or at the root of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("migrations directory not found")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _current_revision(conn: Connection) -> str | None:
    # Read directly: a MigrationContext would log two INFO lines on every readiness probe.
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    revision: str | None = conn.execute(
        sa.text("SELECT version_num FROM alembic_version")
    ).scalar_one_or_none()
    return revision


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, beginning plain (deferred) transactions on SQLite."""
    return engine.execution_options(**{READ_ONLY: True})


async def current_revision(conn: AsyncConnection) -> str | None:
    return await conn.run_sync(_current_revision)
