"""What the database's faults mean, and what a command says when it cannot do its work.

The one home of the rules that sort what a database call raised: ``is_database_unavailable``
(a request is answered 503 with ``Retry-After``), ``pooler_fault`` (a pooler in transaction
mode without ``RESTOCK_DB_POOLER=transaction``, also 503 at run time) and, at start-up,
``database_fault``.

A command cannot do its work: one line, never a traceback.

Every command raises ``Refusal`` with that line; ``cli.main`` alone prints it, as
``restock-service: …``, and exits with its status. ``refusing`` turns what a database step
raises (a refused port, a missing database, a file that cannot be opened, a pooler that
loses named statements) into a ``Refusal`` worded by ``database_fault``. A fault that no
rule here knows is a defect and keeps its traceback.
"""

import contextlib
import sqlite3
from collections.abc import Iterator

import asyncpg
from alembic.util import CommandError
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from restock_service.config import Settings

# What a database call can raise that is about the database, not about the request.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    PoolTimeout,
    OSError,  # a refused port, an unknown host; TimeoutError too
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# What a command's database step can raise besides: the plain SQLite driver's errors (its
# first open) and Alembic's, such as a revision it cannot locate.
DATABASE_FAULTS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, sqlite3.Error, CommandError)

# SQLSTATE classes that mean "try again later", not that we asked wrongly: 08 connection
# exception, 40 transaction rollback (deadlocks and serialization failures that outlasted
# the service's own retries), 53 insufficient resources, 57 operator intervention (this
# includes 57014, a statement cancelled when it outran the deadline).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57")

# duplicate_prepared_statement and invalid_sql_statement_name: a statement prepared by name
# on one server connection and used on another, which only a pooler in transaction mode does.
POOLER_SQLSTATES = frozenset({"42P05", "26000"})
# A connection that could not be opened: connection_exception, invalid_authorization_
# specification, invalid_password, invalid_catalog_name (no such database), cannot_connect_now.
UNREACHABLE_SQLSTATES = ("08", "28", "3D000", "57P03")
# protocol_violation, as "bind message supplies 1 parameters, but prepared statement …".
PROTOCOL_VIOLATION = "08P01"

POOLER_IN_TRANSACTION_MODE = (
    "a pooler in transaction mode (such as PgBouncer) stands between the service and "
    "PostgreSQL, where named prepared statements do not hold ({error}); "
    "set RESTOCK_DB_POOLER=transaction"
)


CANNOT_REACH = "cannot reach the database {where}: {error}"
CANNOT_OPEN = "cannot open the database {where}: {error}"  # a SQLite file
FAILED = "a database step on {where} failed: {error}"


class Refusal(Exception):
    """A command cannot go on; ``line`` says why, in one line, and ``status`` is its exit
    status. ``command`` names the subcommand when the refusal is about how it was called."""

    def __init__(self, line: str, status: int = 1, *, command: str | None = None) -> None:
        super().__init__(line)
        self.line = line
        self.status = status
        self.command = command

    def printed(self) -> str:
        prog = f"restock-service {self.command}" if self.command else "restock-service"
        return f"{prog}: {self.line}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: SQLAlchemy's ``orig``, then each ``__cause__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__


def _root(exc: BaseException) -> BaseException:
    *_, root = _chain(exc)
    return root


def _said(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0]


def pooler_fault(exc: BaseException) -> str | None:
    """The line for a named prepared statement that a pooler mixed up; None for anything else."""
    for link in _chain(exc):
        sqlstate = getattr(link, "sqlstate", None)
        if sqlstate in POOLER_SQLSTATES or (
            sqlstate == PROTOCOL_VIOLATION and "prepared statement" in str(link)
        ):
            return POOLER_IN_TRANSACTION_MODE.format(error=str(link).splitlines()[0])
    return None


def is_database_unavailable(exc: BaseException) -> bool:
    """True when the database could not be reached or did not answer in time."""
    if isinstance(exc, asyncpg.PostgresError):  # raised by the PostgreSQL store
        return (exc.sqlstate or "").startswith(UNAVAILABLE_SQLSTATE_CLASSES)
    if isinstance(exc, asyncpg.InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return (
            exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or sqlstate.startswith(UNAVAILABLE_SQLSTATE_CLASSES)
        )
    return isinstance(exc, PoolTimeout | OSError)


def _unreachable(root: BaseException) -> bool:
    if isinstance(root, OSError | asyncpg.InterfaceError | PoolTimeout):
        return True
    if isinstance(root, sqlite3.OperationalError):
        return "unable to open" in str(root)
    return str(getattr(root, "sqlstate", None) or "").startswith(UNREACHABLE_SQLSTATES)


def shown_url(database_url: str) -> str:
    """The database URL as a refusal names it: its password hidden."""
    return make_url(database_url).render_as_string(hide_password=True)


def database_fault(exc: BaseException, settings: Settings) -> str:
    """One line for what a database step raised on ``settings.database_url``."""
    pooler = pooler_fault(exc)
    if pooler is not None:
        return pooler
    where = shown_url(settings.database_url)
    root = _root(exc)
    if not _unreachable(root):
        line = FAILED
    else:
        line = CANNOT_OPEN if settings.database_url.startswith("sqlite") else CANNOT_REACH
    return line.format(where=where, error=_said(root))


def _open_sqlite(database_url: str) -> None:
    """Open and close the SQLite file with the plain driver. aiosqlite's worker thread
    outlives a failed open (its connect stops the thread without waiting for it), and
    when the event loop has closed first it prints a traceback at exit."""
    url = make_url(database_url).set(drivername="sqlite")
    args, kwargs = SQLiteDialect_pysqlite().create_connect_args(url)
    sqlite3.connect(args[0], uri=bool(kwargs.get("uri"))).close()


@contextlib.contextmanager
def refusing(settings: Settings, status: int = 1) -> Iterator[None]:
    """Run a database step; what it raises about the database becomes a ``Refusal``."""
    try:
        if settings.database_url.startswith("sqlite"):
            _open_sqlite(settings.database_url)
        yield
    except DATABASE_FAULTS as exc:
        raise Refusal(database_fault(exc, settings), status) from exc
