"""SQLAlchemy engines: the SQLite store's, and the ones migrations and ``check`` open."""

import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from restock_service.config import Settings

READ_ONLY = "restock_read_only"


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """An async engine for ``settings.database_url``; on SQLite, writers begin IMMEDIATE.

    Migrations and ``check`` use it unpooled and without the request deadline: they may
    rightly run long.
    """
    url = settings.database_url
    pool: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if not url.startswith("sqlite"):
        connect: dict[str, Any] = {
            "timeout": settings.db_connect_timeout_s,
            "server_settings": {"application_name": "restock-service"},
        }
        if settings.db_pooler == "transaction":
            # SQLAlchemy's advice for PgBouncer in transaction mode: no statement kept by
            # name across transactions, and names no other client can have used.
            connect |= {
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__restock_{uuid.uuid4().hex}__",
            }
        return create_async_engine(url, connect_args=connect, **pool)
    engine = create_async_engine(
        url, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000}, **pool
    )

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

    return engine


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, beginning plain (deferred) transactions on SQLite."""
    return engine.execution_options(**{READ_ONLY: True})
