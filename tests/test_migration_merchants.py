"""Migration 0009 (contract v1.3): a v1.2 database becomes the data of merchant ``default``,
row for row, keyed by merchant; going back refuses while another merchant has anything.

Most tests take a database of each backend at 0008 holding a v1.2 history, written as the
service did (the ledger numbering itself). On PostgreSQL, which upgrades in steps while the
service writes, a run that failed or was cut off is run again."""

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.migrations import alembic_config
from restock_service.tables import DEFAULT_MERCHANT, metadata
from tests.conftest import drop_pg_database, throwaway_pg_database
from tests.test_schema import _schema_diff

T = TypeVar("T")

AT = datetime(2026, 5, 1, tzinfo=UTC)
TABLES = [
    "stock",
    "stock_movements",
    "sync_executions",
    "sync_execution_lines",
    "restocks",
    "restock_lines",
    "idempotency_keys",
]
V12_HISTORY = """
INSERT INTO stock (sku, quantity, created_at, updated_at) VALUES
  ('CAP-01', 7, :at, :at), ('CAP-02', 2, :at, :at), ('CAP-03', 0, :at, :at);
INSERT INTO stock_movements (sku, delta, quantity_after, reason, order_no, at, actor) VALUES
  ('CAP-01', 10, 10, 'set', NULL, :at, 'yamada'),
  ('CAP-02', 3, 3, 'set', NULL, :at, 'yamada'),
  ('CAP-03', 1, 1, 'set', NULL, :at, NULL),
  ('CAP-01', -3, 7, 'sync_execution', 'A-1', :at, 'sync'),
  ('CAP-02', -1, 2, 'sync_execution', 'A-2', :at, 'sync'),
  ('CAP-03', -1, 0, 'sync_execution', 'A-2', :at, 'sync');
INSERT INTO sync_executions (order_no, mall, executed_at, recorded_at) VALUES
  ('A-1', 'rakuten', :at, :at), ('A-2', 'yahoo', :at, :at);
INSERT INTO sync_execution_lines (order_no, sku, position, quantity) VALUES
  ('A-1', 'CAP-01', 0, 3), ('A-2', 'CAP-02', 0, 1), ('A-2', 'CAP-03', 1, 1);
INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at) VALUES
  ('A-1', 'rakuten', 'failed', 'product_not_found', :at, :at),
  ('A-3', 'amazon', 'failed', 'mall_mismatch', :at, :at);
INSERT INTO restock_lines (order_no, sku, position, quantity, missing) VALUES
  ('A-1', 'CAP-01', 0, 3, false), ('A-1', 'GONE-9', 1, 1, true);
INSERT INTO idempotency_keys (owner, key, fingerprint, locked_until, created_at, expires_at,
                              receipt) VALUES
  ('yamada', 'k-1', :fingerprint, NULL, :at, :later, :receipt),
  ('sync', 'k-1', :fingerprint, :at, :at, :later, NULL)
"""
HISTORY_PARAMS = {"at": AT, "later": AT + timedelta(days=1), "fingerprint": b"f", "receipt": b"r"}


def _on(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one transaction on ``url``, as the service's engine connects."""

    async def run() -> T:
        engine = create_engine(Settings(database_url=url), pooled=False)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _execute(sql: str, **params: Any) -> Callable[[Connection], None]:
    def work(conn: Connection) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(sa.text(statement), params)

    return work


def _select(sql: str) -> Callable[[Connection], list[tuple[Any, ...]]]:
    return lambda conn: [tuple(row) for row in conn.execute(sa.text(sql))]


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, without the columns that 0009 adds or drops, in key order."""
    kept: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        columns = [
            c["name"]
            for c in sa.inspect(conn).get_columns(table)
            if c["name"] not in ("merchant_id", "locked_until")
        ]
        rows = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM {table}")).all()
        kept[table] = sorted(tuple(row) for row in rows)
    return kept


def _merchants_of_rows(conn: Connection) -> dict[str, list[str]]:
    return {
        table: [m for (m,) in conn.execute(sa.text(f"SELECT DISTINCT merchant_id FROM {table}"))]
        for table in TABLES
    }


def _revision(conn: Connection) -> str:
    return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())


def _options(index: Any) -> dict[str, str]:
    return {name: str(value) for name, value in index.get("dialect_options", {}).items()}


def _shape(conn: Connection) -> dict[str, Any]:
    """What reflection tells of every table: its columns (in any order), keys, indexes
    (their predicates as text) and checks."""
    inspector = sa.inspect(conn)
    shape: dict[str, Any] = {}
    for table in inspector.get_table_names():
        columns = sorted(
            (c["name"], str(c["type"]), c["nullable"], c["default"])
            for c in inspector.get_columns(table)
        )
        indexes = sorted(
            (i["name"], i["column_names"], bool(i["unique"]), _options(i))
            for i in inspector.get_indexes(table)
        )
        shape[table] = (
            columns,
            inspector.get_pk_constraint(table),
            inspector.get_foreign_keys(table),
            indexes,
            inspector.get_check_constraints(table),
        )
    return shape


@pytest.fixture
def v12(empty_database_url: str) -> tuple[str, Config]:
    """A database at 0008 holding a v1.2 history."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0008")
    _on(empty_database_url, _execute(V12_HISTORY, **HISTORY_PARAMS))
    return empty_database_url, config


@pytest.fixture
def empty_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    name, url = throwaway_pg_database(pg_admin_dsn)
    try:
        yield url
    finally:
        drop_pg_database(pg_admin_dsn, name)


def test_every_v12_row_becomes_defaults_unchanged_ledger_ids_included(
    v12: tuple[str, Config],
) -> None:
    url, config = v12
    before = _on(url, _rows)
    command.upgrade(config, "head")

    assert _on(url, _rows) == before
    assert _on(url, _merchants_of_rows) == {table: [DEFAULT_MERCHANT] for table in TABLES}
    merchants = _on(url, _select("SELECT merchant_id, name FROM merchants"))
    assert merchants == [(DEFAULT_MERCHANT, DEFAULT_MERCHANT)]
    assert _schema_diff(url) == []


def test_skus_and_orders_are_unique_within_their_merchant(v12: tuple[str, Config]) -> None:
    url, config = v12
    command.upgrade(config, "head")

    _on(
        url,
        _execute(
            "INSERT INTO stock (merchant_id, sku, quantity, created_at, updated_at)"
            " VALUES ('shop-b', 'CAP-01', 1, :at, :at);"
            "INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)"
            " VALUES ('shop-b', 'A-1', 'rakuten', :at, :at);"
            "INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)"
            " VALUES ('shop-b', 'A-1', 'CAP-01', 0, 1)",
            at=AT,
        ),
    )
    with pytest.raises(IntegrityError):
        _on(
            url,
            _execute(
                "INSERT INTO stock (merchant_id, sku, quantity, created_at, updated_at)"
                " VALUES ('default', 'CAP-01', 1, :at, :at)",
                at=AT,
            ),
        )
    with pytest.raises(IntegrityError):  # A-3 is default's order, not shop-b's
        _on(
            url,
            _execute(
                "INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity,"
                " missing) VALUES ('shop-b', 'A-3', 'CAP-01', 0, 1, false)"
            ),
        )

    _on(url, _execute("DELETE FROM sync_executions WHERE merchant_id = 'default'"))
    lines = _on(url, _select("SELECT merchant_id FROM sync_execution_lines"))
    assert lines == [("shop-b",)]


def test_a_write_that_names_no_merchant_fails(v12: tuple[str, Config]) -> None:
    url, config = v12
    command.upgrade(config, "head")

    def defaults(conn: Connection) -> dict[str, object]:
        inspector = sa.inspect(conn)
        return {
            table: column["default"]
            for table in TABLES
            for column in inspector.get_columns(table)
            if column["name"] == "merchant_id"
        }

    assert _on(url, defaults) == {table: None for table in TABLES}
    with pytest.raises(IntegrityError):
        _on(
            url,
            _execute(
                "INSERT INTO stock (sku, quantity, created_at, updated_at)"
                " VALUES ('NEW-1', 1, :at, :at)",
                at=AT,
            ),
        )


def test_the_ledger_numbers_on_from_its_sequence_on_postgresql_and_not_at_all_on_sqlite(
    v12: tuple[str, Config],
) -> None:
    url, config = v12
    command.upgrade(config, "head")
    insert = _execute(
        "INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at)"
        " VALUES ('default', 'CAP-01', 1, 8, 'adjustment', :at)",
        at=AT,
    )

    if url.startswith("sqlite"):
        with pytest.raises(IntegrityError):
            _on(url, insert)
        return
    _on(url, insert)
    ids = _on(url, _select("SELECT id FROM stock_movements ORDER BY id"))
    assert ids == [(n,) for n in range(1, 8)]


@pytest.mark.parametrize(
    "other",
    [
        "INSERT INTO merchants (merchant_id, name, created_at) VALUES ('shop-b', 'B', :at)",
        "INSERT INTO stock_movements (merchant_id, id, sku, delta, quantity_after, reason, at)"
        " VALUES ('shop-b', 1, 'CAP-01', 1, 1, 'set', :at)",
    ],
    ids=["registered", "ledger-row"],
)
def test_going_down_refuses_while_another_merchant_has_anything(
    v12: tuple[str, Config], other: str
) -> None:
    url, config = v12
    command.upgrade(config, "head")
    _on(url, _execute(other, at=AT))
    before = _on(url, _rows)

    with pytest.raises(
        CommandError, match=r"cannot downgrade to 0008: table .+ holds a row of merchant 'shop-b'"
    ):
        command.downgrade(config, "0008")

    assert _on(url, _revision) == "0009"
    assert _on(url, _rows) == before
    assert _schema_diff(url) == []


def test_going_down_with_only_defaults_data_gives_back_the_v12_schema_and_rows(
    v12: tuple[str, Config],
) -> None:
    url, config = v12
    v12_shape, v12_rows = _on(url, _shape), _on(url, _rows)
    command.upgrade(config, "head")

    command.downgrade(config, "0008")

    assert _on(url, _shape) == v12_shape
    assert _on(url, _rows) == v12_rows
    command.upgrade(config, "head")
    assert _schema_diff(url) == []


def test_the_primary_keys_and_checks_are_those_of_the_tables(database_url: str) -> None:
    """Autogenerate, which the schema test runs, compares neither."""

    def reflected(conn: Connection) -> dict[str, object]:
        inspector = sa.inspect(conn)
        return {
            table: (
                inspector.get_pk_constraint(table)["name"],
                inspector.get_pk_constraint(table)["constrained_columns"],
                sorted(str(check["name"]) for check in inspector.get_check_constraints(table)),
            )
            for table in metadata.tables
        }

    assert _on(database_url, reflected) == {
        table.name: (
            table.primary_key.name,
            [column.name for column in table.primary_key.columns],
            sorted(str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)),
        )
        for table in metadata.tables.values()
    }


def test_on_sqlite_a_migration_that_leaves_a_line_without_its_order_is_undone(
    tmp_path: Path,
) -> None:
    """SQLite rebuilds tables with foreign keys off (migrations/env.py): each migration
    checks them before it commits."""
    path = tmp_path / "orphan.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0008")
    with closing(sqlite3.connect(path)) as plain, plain:  # foreign keys off, as sqlite3 opens
        plain.execute(
            "INSERT INTO sync_execution_lines (order_no, sku, position, quantity)"
            " VALUES ('NEVER-SYNCED', 'CAP-01', 0, 1)"
        )

    with pytest.raises(RuntimeError, match="without their parent"):
        command.upgrade(config, "head")

    assert _on(f"sqlite+aiosqlite:///{path}", _revision) == "0008"


def test_a_lock_held_past_the_timeout_fails_the_upgrade_and_a_second_run_finishes(
    empty_pg_url: str,
) -> None:
    """Behind a transaction that holds a table, the migration gives up instead of making
    every write wait behind it; what it did stays done, and the next run goes on."""
    config = alembic_config(empty_pg_url)
    command.upgrade(config, "0008")
    _on(empty_pg_url, _execute(V12_HISTORY, **HISTORY_PARAMS))
    v12_rows = _on(empty_pg_url, _rows)

    async def upgrade_while_a_transaction_holds_the_last_table() -> None:
        engine = create_engine(Settings(database_url=empty_pg_url), pooled=False)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("LOCK TABLE idempotency_keys IN ACCESS SHARE MODE"))
                await asyncio.to_thread(command.upgrade, config, "head")
        finally:
            await engine.dispose()

    with pytest.raises(DBAPIError, match="lock timeout"):
        asyncio.run(upgrade_while_a_transaction_holds_the_last_table())
    assert _on(empty_pg_url, _revision) == "0008"
    assert _on(empty_pg_url, lambda c: sa.inspect(c).has_table("merchants"))

    command.upgrade(config, "head")
    assert _on(empty_pg_url, _revision) == "0009"
    assert _schema_diff(empty_pg_url) == []
    assert _on(empty_pg_url, _rows) == v12_rows
    assert (
        _on(empty_pg_url, _select("SELECT conname FROM pg_constraint WHERE NOT convalidated")) == []
    )


def test_an_index_that_a_failed_build_left_invalid_is_built_again(empty_pg_url: str) -> None:
    config = alembic_config(empty_pg_url)
    command.upgrade(config, "0008")
    _on(empty_pg_url, _execute(V12_HISTORY, **HISTORY_PARAMS))

    async def fail_a_build() -> None:  # a unique index over equal values: INVALID, and kept
        conn = await asyncpg.connect(empty_pg_url.replace("+asyncpg", ""))
        try:
            await conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY pk_stock_0009 ON stock (created_at)"
            )
        finally:
            await conn.close()

    with pytest.raises(asyncpg.UniqueViolationError):
        asyncio.run(fail_a_build())
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'pk_stock_0009'::regclass"
    assert _on(empty_pg_url, _select(valid)) == [(False,)]
    command.upgrade(config, "head")

    key = _on(empty_pg_url, lambda c: sa.inspect(c).get_pk_constraint("stock"))
    assert key["constrained_columns"] == ["merchant_id", "sku"]


def test_an_upgrade_run_again_over_its_own_result_finds_every_step_done(
    empty_pg_url: str,
) -> None:
    config = alembic_config(empty_pg_url)
    command.upgrade(config, "head")
    command.stamp(config, "0008")

    command.upgrade(config, "head")

    assert _on(empty_pg_url, _revision) == "0009"
    assert _schema_diff(empty_pg_url) == []
