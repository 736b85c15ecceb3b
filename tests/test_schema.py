"""The Alembic migrations are the schema: they run on both dialects and match the tables."""

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.migrations import alembic_config, head_revision
from restock_service.tables import metadata


def _schema_diff(database_url: str) -> list[object]:
    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async def run() -> list[object]:
        engine = create_engine(Settings(database_url=database_url), pooled=False)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_tables_and_migrations_agree(database_url: str) -> None:
    assert _schema_diff(database_url) == []


def test_migrations_go_down_to_nothing_and_up_again(empty_database_url: str) -> None:
    cfg = alembic_config(empty_database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")

    assert _schema_diff(empty_database_url) == []
    assert head_revision() is not None
