"""The commands, the readiness endpoint and the committed OpenAPI document."""

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.config import Settings, normalize_database_url
from restock_service.engine import create_engine
from restock_service.faults import CANNOT_OPEN, CANNOT_REACH, shown_url
from restock_service.migrations import NEWER, head_revision
from tests.conftest import migrated_pg_database
from tests.servers import free_port

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restock_service", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite+aiosqlite:///./restock.db", "sqlite+aiosqlite:///./restock.db"),
        ("sqlite:///./restock.db", "sqlite+aiosqlite:///./restock.db"),
    ],
)
def test_accepted_database_urls_mean_the_async_drivers(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_unsupported_database_url_is_refused_in_one_line(tmp_path: Path) -> None:
    result = _cli("migrate", cwd=tmp_path, RESTOCK_DATABASE_URL="mysql://u@h/db")

    assert result.returncode != 0
    assert "unsupported database URL scheme 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_database_whose_schema_is_not_current(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"

    result = _cli("serve", "--port", str(free_port()), cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "schema is not current" in lines[0]
    assert "restock-service migrate" in lines[0]


def test_migrate_finds_its_scripts_from_any_working_directory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    result = _cli("migrate", cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").exists()


def test_committed_openapi_document_equals_what_the_app_serves() -> None:
    served = create_app(Settings()).openapi()
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))

    assert committed == served, "run `make openapi` and commit openapi/openapi.json"


def test_openapi_command_prints_the_served_document(tmp_path: Path) -> None:
    result = _cli("openapi", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == create_app(Settings()).openapi()


def test_every_operation_has_a_stable_id_and_a_description() -> None:
    document = create_app(Settings()).openapi()
    operations = [op for path in document["paths"].values() for op in path.values()]

    assert all(op.get("operationId") for op in operations)
    assert all(op.get("description") for op in operations)
    assert len({op["operationId"] for op in operations}) == len(operations)


async def test_health_answers_while_the_process_runs(client: AsyncClient) -> None:
    response = await client.get("/health")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_ready_when_the_database_answers_and_its_schema_is_current(
    client: AsyncClient,
) -> None:
    response = await client.get("/ready")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def _call(url: str, method: str, path: str) -> tuple[int, dict[str, str], dict[str, object]]:
    app = create_app(Settings(database_url=url, db_connect_timeout_s=2))
    transport = ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        response = await c.request(method, path)
    return response.status_code, dict(response.headers), response.json()


async def test_ready_is_503_while_the_schema_is_behind(tmp_path: Path) -> None:
    status, headers, body = await _call(
        f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}", "GET", "/ready"
    )

    assert status == 503
    assert headers["retry-after"]
    assert "restock-service migrate" in str(body["detail"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/ready"), ("GET", "/stock/A"), ("GET", "/restocks/354396-20260525-0000000001")],
)
async def test_unreachable_database_answers_503_with_retry_after(method: str, path: str) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"

    status, headers, body = await _call(dead, method, path)

    assert status == 503
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"].startswith("application/problem+json")
    assert body["status"] == 503


def test_demo_command_runs_on_a_database_of_its_own_not_the_configured_one(
    tmp_path: Path,
) -> None:
    configured = tmp_path / "service.db"

    result = _cli("demo", cwd=tmp_path, RESTOCK_DATABASE_URL=f"sqlite+aiosqlite:///{configured}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "受注番号 | メッセージ" in result.stdout
    assert (tmp_path / "restock-demo.db").exists()
    assert not configured.exists()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unknown_restock_variable_stops_start_up_naming_the_setting_it_likely_meant(
    tmp_path: Path,
) -> None:
    result = _cli("serve", cwd=tmp_path, RESTOCK_POOL_SIZE="50")

    assert result.returncode != 0
    assert _one_line(result) == (
        "restock-service: invalid configuration: "
        "RESTOCK_POOL_SIZE is not a setting (did you mean RESTOCK_DB_POOL_SIZE?)"
    )


def test_a_bad_log_level_stops_start_up_in_one_line(tmp_path: Path) -> None:
    result = _cli("serve", cwd=tmp_path, RESTOCK_LOG_LEVEL="verbose")

    assert result.returncode != 0
    line = _one_line(result)
    assert "RESTOCK_LOG_LEVEL" in line
    assert "'verbose' is not a log level" in line


def test_log_level_is_case_insensitive() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "0"], "--workers"),
        (["--workers", "-2"], "--workers"),
        (["--port", "99999"], "--port"),
        (["--port", "-1"], "--port"),
        (["--port", "0"], "--port"),
    ],
)
def test_impossible_workers_and_ports_are_refused_in_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = _cli("serve", *args, cwd=tmp_path)

    assert result.returncode == 2
    line = _one_line(result)
    assert f"argument {named}: {args[1]} is out of range" in line


def test_sqlite_with_more_than_one_worker_is_refused_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    result = _cli("serve", "--workers", "2", cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("restock-service: --workers 2 needs PostgreSQL")
    assert not (tmp_path / "x.db").exists()


START_UP_COMMANDS = [["migrate"], ["serve", "--migrate"]]


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return _one_line(result)


@pytest.mark.parametrize("command", START_UP_COMMANDS)
def test_a_refused_port_is_one_line(tmp_path: Path, command: list[str]) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing"

    result = _cli(*command, cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 1
    error = f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})"
    assert _refusal(result) == "restock-service: " + CANNOT_REACH.format(where=url, error=error)


@pytest.mark.parametrize("command", START_UP_COMMANDS)
def test_a_missing_postgresql_database_is_one_line(
    tmp_path: Path, pg_admin_dsn: str, command: list[str]
) -> None:
    url = normalize_database_url(pg_admin_dsn.rsplit("/", 1)[0] + "/restock_nowhere")

    result = _cli(*command, cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 1
    error = 'InvalidCatalogNameError: database "restock_nowhere" does not exist'
    assert _refusal(result) == "restock-service: " + CANNOT_REACH.format(
        where=shown_url(url), error=error
    )


@pytest.mark.parametrize("command", START_UP_COMMANDS)
def test_a_sqlite_path_that_cannot_be_opened_is_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'restock.db'}"

    result = _cli(*command, cwd=tmp_path, RESTOCK_DATABASE_URL=url)

    assert result.returncode == 1
    error = "OperationalError: unable to open database file"
    assert _refusal(result) == "restock-service: " + CANNOT_OPEN.format(where=url, error=error)


FUTURE_REVISION = "0099_from_a_newer_version"


async def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(Settings(database_url=url), pooled=False)
    try:
        async with engine.begin() as conn:
            set_revision = sa.text("UPDATE alembic_version SET version_num = :revision")
            await conn.execute(set_revision, {"revision": revision})
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def newer_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database whose schema a newer version of the service migrated: its revision is
    one this code does not have."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
        assert _cli("migrate", cwd=tmp_path, RESTOCK_DATABASE_URL=url).returncode == 0
        asyncio.run(_set_revision(url, FUTURE_REVISION))
        yield url
        return
    with migrated_pg_database(request.getfixturevalue("pg_admin_dsn")) as url:
        asyncio.run(_set_revision(url, FUTURE_REVISION))
        yield url


NEWER_LINE = NEWER.format(revision=FUTURE_REVISION, head=head_revision())


@pytest.mark.parametrize(
    ("command", "status"),
    [(["migrate"], 1), (["serve"], 1), (["serve", "--migrate"], 1), (["check"], 2)],
)
def test_a_database_of_a_newer_version_is_refused_in_one_line_that_says_so(
    tmp_path: Path, newer_database_url: str, command: list[str], status: int
) -> None:
    port = ["--port", str(free_port())] if command[0] == "serve" else []

    result = _cli(*command, *port, cwd=tmp_path, RESTOCK_DATABASE_URL=newer_database_url)

    assert result.returncode == status, result.stdout
    assert _refusal(result) == f"restock-service: {NEWER_LINE}"
    assert result.stdout == ""  # check vouches for nothing


async def test_ready_says_the_database_belongs_to_a_newer_version(
    newer_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        status, headers, body = await _call(newer_database_url, "GET", "/ready")

    assert (status, body["detail"]) == (503, NEWER_LINE)
    assert headers["retry-after"]
    assert f"not ready: {NEWER_LINE}" in caplog.messages
