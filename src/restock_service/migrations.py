"""The schema's version: Alembic's scripts, ``migrate``, and what the database is at."""

import asyncio
import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from restock_service.config import Settings
from restock_service.engine import create_engine, read_only
from restock_service.faults import Refusal, refusing

NOT_CURRENT = (
    "the database schema is not current (at {revision}, head is {head}); "
    "run `restock-service migrate` or `restock-service serve --migrate`"
)
NEWER = (
    "the database belongs to a newer version of the service: its schema is at revision "
    "{revision}, which this version (head {head}) does not have; use that newer version on it"
)


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


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str | None:
    return _scripts().get_current_head()


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this version's scripts have, the head's ancestors included."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def schema_mismatch(revision: str | None) -> str | None:
    """Why a database at ``revision`` cannot be served, in one line; None at the head."""
    head = head_revision()
    if revision == head:
        return None
    if revision is not None and revision not in known_revisions():
        return NEWER.format(revision=revision, head=head)
    return NOT_CURRENT.format(revision=revision or "no revision", head=head)


def migrate(settings: Settings) -> None:
    """Bring the database to the current schema; raises ``Refusal`` instead of touching a
    schema this version does not know, and for what the database raised."""
    revision = database_revision(settings)
    if revision is not None and revision not in known_revisions():
        raise Refusal(NEWER.format(revision=revision, head=head_revision()))
    with refusing(settings):
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


def database_revision(settings: Settings, status: int = 1) -> str | None:
    """The revision the database is at; raises ``Refusal`` with ``status`` when it cannot
    be read in time."""
    bound = settings.db_connect_timeout_s + settings.db_deadline_s
    with refusing(settings, status):
        try:
            return asyncio.run(asyncio.wait_for(_revision(settings), bound))
        except TimeoutError:
            raise Refusal(f"the database did not answer within {bound:g} s", status) from None


def require_current_schema(settings: Settings, status: int = 1) -> None:
    """Raise ``Refusal`` with ``status`` unless the database answers and its schema is at
    the head."""
    problem = schema_mismatch(database_revision(settings, status))
    if problem is not None:
        raise Refusal(problem, status)
