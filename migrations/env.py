"""Alembic environment: runs the migrations over the service's own async engine."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


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
