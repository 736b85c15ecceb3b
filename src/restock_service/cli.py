"""The ``restock-service`` command: migrate, serve, check, demo, openapi, merchants. A
command that cannot do its work raises ``faults.Refusal``; ``main`` prints its one line."""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from pydantic import ValidationError

from restock_service.books import BooksReport, check_books
from restock_service.config import Settings, normalize_database_url, unknown_variables
from restock_service.engine import create_engine, read_only
from restock_service.faults import Refusal, refusing
from restock_service.logs import configure_logging
from restock_service.merchants import Merchant
from restock_service.metrics import shared_by_workers
from restock_service.migrations import migrate, require_current_schema
from restock_service.schemas import MerchantIn
from restock_service.scope import Scope
from restock_service.store import open_store
from restock_service.tables import MERCHANT_ID_RULE, PLATFORM, is_merchant_id

# Where `serve` listens unless told otherwise: where `make run` serves the console.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
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
    print(f"console: {console_url(args.host, args.port)}", flush=True)
    with shared_by_workers(args.workers):  # before the workers start: they inherit it
        return serving.run(settings, args.host, args.port, args.workers)


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
            merchant, created = asyncio.run(_add_merchant(settings, args.merchant_id, name))
            state = "registered" if created else "already registered"
            print(f"{merchant.merchant_id}\t{merchant.name}\t{state}")
            return 0
        for merchant in asyncio.run(_merchants(settings)):
            print(f"{merchant.merchant_id}\t{merchant.name}\t{merchant.created_at.isoformat()}")
    return 0


async def _add_merchant(settings: Settings, merchant_id: str, name: str) -> tuple[Merchant, bool]:
    store = open_store(settings)
    try:
        now = datetime.now(UTC)
        return await store.put_merchant(Scope(PLATFORM), merchant_id, name, now, rename=False)
    finally:
        await store.close()


async def _merchants(settings: Settings) -> list[Merchant]:
    store = open_store(settings)
    found: list[Merchant] = []
    try:
        while True:
            page = await store.merchants(found[-1].merchant_id if found else None, PAGE)
            found += page
            if len(page) < PAGE:
                break
    finally:
        await store.close()
    return found


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
    openapi()
    return 0
