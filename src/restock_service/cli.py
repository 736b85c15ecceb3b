"""The ``restock-service`` command: migrate, serve, openapi."""

import argparse
import asyncio
import json
import sys

from pydantic import ValidationError

from restock_service.books import BooksReport, check_books
from restock_service.config import Settings
from restock_service.engine import create_engine, read_only
from restock_service.logs import configure_logging
from restock_service.metrics import shared_by_workers
from restock_service.migrations import migrate, schema_problem


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RESTOCK_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"restock-service: invalid configuration: {problems}") from None


async def _check(settings: Settings) -> BooksReport:
    engine = create_engine(settings, pooled=False)
    try:
        async with read_only(engine).connect() as conn:
            return await check_books(conn)
    finally:
        await engine.dispose()


def check(settings: Settings) -> int:
    """Print what does not hold and return 1, or print a one-line summary and return 0."""
    try:
        report = asyncio.run(_check(settings))
    except Exception as exc:
        first_line = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
        print(f"restock-service: cannot check the books: {first_line}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem)
    if report.balanced:
        print(report.summary())
        return 0
    print(f"books do not balance: {len(report.problems)} problem(s)", file=sys.stderr)
    return 1


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if args.migrate:
        migrate(settings)
    problem = schema_problem(settings)
    if problem:
        print(f"restock-service: {problem}", file=sys.stderr)
        return 1
    print(f"console: {console_url(args.host, args.port)}", flush=True)
    with shared_by_workers(args.workers):  # before the workers start: they inherit it
        uvicorn.run(
            "restock_service.api:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=settings.log_level.lower(),
            log_config=None,  # uvicorn's loggers go through ours: same format, request ids
            access_log=settings.access_log,
            timeout_graceful_shutdown=settings.graceful_shutdown_s,
        )
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="restock-service",
        description="Restores a cancelled order's synced stock, exactly once per order.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring RESTOCK_DATABASE_URL to the current schema")
    serve_cmd = commands.add_parser("serve", help="serve the HTTP API")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--workers", type=int, default=1)
    serve_cmd.add_argument(
        "--migrate", action="store_true", help="migrate the database first, instead of refusing"
    )
    commands.add_parser("openapi", help="print the OpenAPI document")
    commands.add_parser(
        "check", help="verify that stock equals its ledger and restocks match their ledger rows"
    )
    commands.add_parser(
        "demo", help="run a mixed Rakuten cancel batch and print the merchant's result screen"
    )
    args = parser.parse_args(argv)

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "serve":
        return serve(settings, args)
    if args.command == "check":
        return check(settings)
    if args.command == "demo":
        from restock_service.demo import main_demo

        return main_demo(settings, sys.stdout)
    openapi()
    return 0
