"""The ``restock-service`` command: migrate, serve, check, demo, openapi, merchants, keys. A
command that cannot do its work raises ``faults.Refusal``; ``main`` prints its one line."""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from restock_service import platform
from restock_service.access import MERCHANT_ROLES, Role, key_name_problem
from restock_service.books import BooksReport, check_books
from restock_service.config import Settings, normalize_database_url, unknown_variables
from restock_service.engine import create_engine, read_only
from restock_service.errors import DomainError
from restock_service.faults import Refusal, refusing
from restock_service.keys import Keyring
from restock_service.logs import configure_logging
from restock_service.merchants import Merchant
from restock_service.metrics import shared_by_workers
from restock_service.migrations import migrate, require_current_schema
from restock_service.schemas import MerchantIn
from restock_service.scope import Scope
from restock_service.store import Store, open_store
from restock_service.tables import MERCHANT_ID_RULE, PLATFORM, is_merchant_id

# Where `serve` listens unless told otherwise: where `make run` serves the console.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
T = TypeVar("T")
# `check`'s status when it cannot check: 1 says that the books do not balance.
CANNOT_CHECK = 2


def _settings() -> Settings:
    unknown = unknown_variables(os.environ)
    if unknown:
        raise Refusal(f"invalid configuration: {'; '.join(unknown)}")
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RESTOCK_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise Refusal(f"invalid configuration: {problems}") from None


def _bounded(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``, or a one-line refusal."""
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: use a number {bounds}")
        return value

    return parse


async def _check(settings: Settings, merchant: str | None) -> BooksReport:
    engine = create_engine(settings, pooled=False)
    try:
        async with read_only(engine).connect() as conn:
            return await check_books(conn, merchant)
    finally:
        await engine.dispose()


def check(settings: Settings, merchant: str | None = None) -> int:
    """Print what does not hold and return 1, or print a one-line summary and return 0.
    Refuses (``CANNOT_CHECK``) a database it cannot read, or whose schema is not this
    version's head: it vouches only for books whose tables it knows."""
    require_current_schema(settings, CANNOT_CHECK)
    with refusing(settings, CANNOT_CHECK):
        report = asyncio.run(_check(settings, merchant))
    if merchant is not None and not report.merchants:
        raise Refusal(f"no merchant {merchant!r} is registered", CANNOT_CHECK)
    for problem in report.problems:
        print(problem)
    if report.balanced:
        print(report.summary())
        return 0
    print(f"books do not balance: {len(report.problems)} problem(s)", file=sys.stderr)
    return 1


SQLITE_ONE_PROCESS = (
    "--workers {workers} needs PostgreSQL: on SQLite each worker would queue "
    "its writers on a lock of its own, and the workers would contend for the file's one write "
    "lock, which the service does not order; use --workers 1 or "
    "RESTOCK_DATABASE_URL=postgresql://…"
)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from restock_service import serving

    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        raise Refusal(SQLITE_ONE_PROCESS.format(workers=args.workers), 2)
    if args.migrate:
        migrate(settings)
    require_current_schema(settings)
    with refusing(settings):
        _names_apart(settings)
    print(f"console: {console_url(args.host, args.port)}", flush=True)
    with shared_by_workers(args.workers):  # before the workers start: they inherit it
        return serving.run(settings, args.host, args.port, args.workers)


def _names_apart(settings: Settings) -> None:
    """Refuse to serve when a key's name is both in RESTOCK_API_KEYS and in the database
    (contract v1.3): an actor would not say which key wrote."""
    configured = Keyring(settings.keys())
    stored = asyncio.run(_in_store(settings, lambda store: store.api_keys(None)))
    both = sorted(
        f"{r.merchant_id}/{r.name}"
        for r in stored
        if configured.is_configured(r.merchant_id, r.name)
    )
    if both:
        raise Refusal(
            f"a key name may not be both in RESTOCK_API_KEYS and in the database: {', '.join(both)}"
            " (revoke one: restock-service keys revoke)",
            2,
        )


def demo(settings: Settings, args: argparse.Namespace) -> int:
    from restock_service import demo

    try:
        url = normalize_database_url(args.database or demo.DATABASE_URL)
    except ValueError as exc:
        raise Refusal(str(exc), 2, command="demo") from None
    settings = settings.model_copy(update={"database_url": url})
    try:
        with refusing(settings):
            return demo.main_demo(settings, sys.stdout, yes=args.yes, port=args.port)
    except demo.NotADemoDatabase as exc:
        raise Refusal(str(exc), 2, command="demo") from None


def console_url(host: str, port: int) -> str:
    """Where a browser on this host finds the operations console."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/console"


def openapi() -> None:
    from restock_service.api import create_app

    document = create_app(Settings()).openapi()
    print(json.dumps(document, ensure_ascii=False, indent=2))


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, without the usage block before them."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def arguments() -> argparse.ArgumentParser:
    """The command line of ``restock-service``: its commands and their options."""
    parser = _Parser(
        prog="restock-service",
        description="Restores a cancelled order's synced stock, exactly once per order.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring RESTOCK_DATABASE_URL to the current schema")
    serve_cmd = commands.add_parser("serve", help="serve the HTTP API")
    serve_cmd.add_argument("--host", default=DEFAULT_HOST)
    serve_cmd.add_argument("--port", type=_bounded(1, 65535), default=DEFAULT_PORT)
    serve_cmd.add_argument("--workers", type=_bounded(1), default=1)
    serve_cmd.add_argument(
        "--migrate", action="store_true", help="migrate the database first, instead of refusing"
    )
    commands.add_parser("openapi", help="print the OpenAPI document")
    check_cmd = commands.add_parser(
        "check", help="verify that stock equals its ledger and restocks match their ledger rows"
    )
    check_cmd.add_argument(
        "--merchant", metavar="ID", type=_merchant_id, help="check one merchant's books only"
    )
    demo_cmd = commands.add_parser(
        "demo", help="run a mixed Rakuten cancel batch and print the merchant's result screen"
    )
    demo_cmd.add_argument(
        "--database",
        metavar="URL",
        help="the database to run on, instead of a SQLite file of its own, ./restock-demo.db",
    )
    demo_cmd.add_argument(
        "--yes", action="store_true", help="run even on a database that holds other data"
    )
    demo_cmd.add_argument(
        "--port",
        type=_bounded(1, 65535),
        default=DEFAULT_PORT,
        help="the port of the `serve` command that the demo prints, to open its console",
    )
    merchants_cmd = commands.add_parser("merchants", help="the merchants this deployment serves")
    merchant_verbs = merchants_cmd.add_subparsers(dest="verb", required=True)
    add_cmd = merchant_verbs.add_parser(
        "add", help="register a merchant (one registered already is left as it is)"
    )
    add_cmd.add_argument("merchant_id", metavar="ID", type=_merchant_id)
    add_cmd.add_argument("--name", help="its name (by default its ID)")
    merchant_verbs.add_parser("list", help="the merchants, one a line")
    keys_cmd = commands.add_parser("keys", help="the keys kept in the database")
    key_verbs = keys_cmd.add_subparsers(dest="verb", required=True)
    for verb, help_, whose_required in (
        ("add", "make a key and print it, once, alone on its line", True),
        ("list", "names, roles, merchants, when made, when last used; never a key", False),
        ("revoke", "revoke a key: every process refuses it within 2 s", True),
    ):
        verb_cmd = key_verbs.add_parser(verb, help=help_)
        whose = verb_cmd.add_mutually_exclusive_group(required=whose_required)
        whose.add_argument("--merchant", metavar="ID", type=_merchant_id, help="a merchant's key")
        whose.add_argument("--platform", action="store_true", help="a platform key")
        if verb != "list":
            verb_cmd.add_argument(
                "--name", required=True, help="the key's name, 1 to 64 characters"
            )
        if verb == "add":
            verb_cmd.add_argument("--role", required=True, choices=[r.value for r in Role])
    return parser


def _merchant_id(text: str) -> str:
    """An argparse type: a merchant's id (contract v1.3), or a one-line refusal."""
    if not is_merchant_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a merchant id: {MERCHANT_ID_RULE}")
    return text


PAGE = 1000  # merchants read at a time by `merchants list`


def merchants(settings: Settings, args: argparse.Namespace) -> int:
    """``merchants add`` and ``merchants list``, on the migrated database."""
    require_current_schema(settings)
    with refusing(settings):
        if args.verb == "add":
            name = args.name if args.name is not None else args.merchant_id
            try:  # the rule of PUT /merchants/{id}'s body
                name = MerchantIn(name=name).name
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise Refusal(f"--name: {problem}", command="merchants") from None
            now = datetime.now(UTC)
            merchant, created = asyncio.run(
                _in_store(
                    settings,
                    lambda store: store.put_merchant(
                        Scope(PLATFORM), args.merchant_id, name, now, rename=False
                    ),
                )
            )
            state = "registered" if created else "already registered"
            print(f"{merchant.merchant_id}\t{merchant.name}\t{state}")
            return 0
        for merchant in asyncio.run(_in_store(settings, _merchants)):
            print(f"{merchant.merchant_id}\t{merchant.name}\t{merchant.created_at.isoformat()}")
    return 0


async def _merchants(store: Store) -> list[Merchant]:
    found: list[Merchant] = []
    while True:
        page = await store.merchants(found[-1].merchant_id if found else None, PAGE)
        found += page
        if len(page) < PAGE:
            return found


def keys(settings: Settings, args: argparse.Namespace) -> int:
    """``keys add``, ``keys list`` and ``keys revoke``, by the rules of the platform's calls."""
    require_current_schema(settings)
    merchant = PLATFORM if args.platform else args.merchant
    with refusing(settings):
        if args.verb == "list":
            for record in asyncio.run(_in_store(settings, lambda store: store.api_keys(merchant))):
                used = record.last_used_at.isoformat() if record.last_used_at else "-"
                print(
                    f"{record.merchant_id}\t{record.name}\t{record.role}"
                    f"\t{record.created_at.isoformat()}\t{used}"
                )
            return 0
        problem = key_name_problem(args.name, merchant == PLATFORM)
        if problem is not None:
            raise Refusal(f"--name {problem}", command="keys")
        if args.verb == "add" and args.role not in (
            tuple(Role) if args.platform else MERCHANT_ROLES
        ):
            raise Refusal("--role admin is a platform key's only (--platform)", command="keys")
        keyring = Keyring(settings.keys())
        now = datetime.now(UTC)
        try:
            if args.verb == "add":
                role = Role(args.role)
                made = asyncio.run(
                    _in_store(
                        settings,
                        lambda store: platform.add_key(
                            store, keyring, Scope(PLATFORM), merchant, args.name, role, now
                        ),
                    )
                )
                print(made.key)
            else:
                asyncio.run(
                    _in_store(
                        settings,
                        lambda store: platform.revoke_key(
                            store, keyring, Scope(PLATFORM), merchant, args.name, now
                        ),
                    )
                )
        except DomainError as exc:
            raise Refusal(exc.detail, command="keys") from None
    return 0


async def _in_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """What ``work`` does with a store of its own, closed after."""
    store = open_store(settings)
    try:
        return await work(store)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    try:
        return _command(args)
    except Refusal as refusal:
        print(refusal.printed(), file=sys.stderr)
        return refusal.status


def _command(args: argparse.Namespace) -> int:
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "serve":
        return serve(settings, args)
    if args.command == "check":
        return check(settings, args.merchant)
    if args.command == "demo":
        return demo(settings, args)
    if args.command == "merchants":
        return merchants(settings, args)
    if args.command == "keys":
        return keys(settings, args)
    openapi()
    return 0
