"""The schema's version: Alembic's scripts, ``migrate``, and what the database is at."""

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from restock_service.config import Settings
from restock_service.engine import create_engine, read_only


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


def migrate(settings: Settings) -> None:
    """Bring the database to the current schema."""
    command.upgrade(alembic_config(settings.database_url), "head")


def current_revision(conn: Connection) -> str | None:
    # Read directly: a MigrationContext would log two INFO lines on every readiness probe.
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    revision: str | None = conn.execute(
        sa.text("SELECT version_num FROM alembic_version")
    ).scalar_one_or_none()
    return revision


async def _revision(settings: Settings) -> str | None:
    engine = create_engine(settings, pooled=False)
    try:
        async with read_only(engine).connect() as conn:
            return await conn.run_sync(current_revision)
    finally:
        await engine.dispose()


def schema_problem(settings: Settings) -> str | None:
    """Why the database cannot be served as it is, or None when its schema is current."""
    bound = settings.db_connect_timeout_s + settings.db_deadline_s
    try:
        revision = asyncio.run(asyncio.wait_for(_revision(settings), bound))
    except TimeoutError:
        return f"the database did not answer within {bound:g} s"
    except Exception as exc:
        return f"cannot reach the database: {exc.__class__.__name__}: {exc}".splitlines()[0]
    head = head_revision()
    if revision != head:
        return (
            f"the database schema is not current (at {revision or 'no revision'}, head is "
            f"{head}); run `restock-service migrate` or `restock-service serve --migrate`"
        )
    return None
