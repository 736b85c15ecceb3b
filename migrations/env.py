"""Alembic environment: runs the migrations over the service's own async engine."""

import asyncio

from alembic import context
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _foreign_keys_off(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=sqlite,
        compare_type=True,
        on_version_apply=[_check_foreign_keys] if sqlite else [],
    )
    with context.begin_transaction():
        context.run_migrations()


def _foreign_keys_off(connection: Connection) -> None:
    """Batch mode rebuilds a SQLite table by dropping it, and with foreign keys on, dropping
    a parent deletes its lines (ON DELETE CASCADE). So, as SQLite's own procedure for such
    changes asks (https://www.sqlite.org/lang_altertable.html#otheralter), they are off while
    the migrations run: set on the driver's connection before any transaction begins (the
    pragma does nothing inside one), and checked at the end of each migration."""
    cursor = connection.connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _check_foreign_keys(*, ctx: MigrationContext, **_: object) -> None:
    """Fail the migration, inside its transaction, if it left a row without its parent."""
    assert ctx.connection is not None
    orphans = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if orphans:
        raise RuntimeError(f"the migration would leave rows without their parent: {orphans[:5]}")


async def _run_async() -> None:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    # Unbounded: a migration of a large table may rightly take longer than a request.
    engine = create_engine(Settings(database_url=url), pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
