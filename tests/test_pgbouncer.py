"""Behind PgBouncer in transaction mode (Debian's 1.18), with two service processes: the
contract holds, no request answers 5xx, and a restock happens once per order.

With ``CI=true`` a missing pgbouncer fails the run; elsewhere these tests skip, saying why.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from restock_service import console
from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.faults import POOLER_IN_TRANSACTION_MODE
from restock_service.store.postgres import connect_args
from tests.conftest import IN_CI, migrated_pg_database
from tests.servers import free_port, running_servers

pytestmark = pytest.mark.pgbouncer

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture(scope="module")
def pgbouncer(pg_admin_dsn: str) -> Iterator[int]:
    """PgBouncer in transaction mode in front of the tests' PostgreSQL; yields its port."""
    if not Path(PGBOUNCER).exists():
        reason = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if IN_CI:
            pytest.fail(f"CI=true needs {reason}", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        os.chmod(home, 0o777)  # pgbouncer drops to the postgres user when started as root
        (Path(home) / "users.txt").write_text('"postgres" ""\n')
        config = Path(home) / "pgbouncer.ini"
        config.write_text(
            f"""[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = trust
auth_file = {home}/users.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 500
unix_socket_dir =
logfile = {home}/pgbouncer.log
"""
        )
        as_root = ["-u", "postgres"] if os.geteuid() == 0 else []
        process = subprocess.Popen([PGBOUNCER, *as_root, str(config)])
        try:
            _wait_for_port(port)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_port(port: int, timeout_s: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on {port}")


@pytest.fixture(scope="module")
def servers(pg_admin_dsn: str, pgbouncer: int) -> Iterator[list[str]]:
    """Two service processes on a fresh database, reached through PgBouncer."""
    with migrated_pg_database(pg_admin_dsn) as direct:
        through = direct.replace(":5432/", f":{pgbouncer}/")
        with running_servers(through, 2, RESTOCK_DB_POOLER="transaction") as urls:
            yield urls


def _rakuten(n: int) -> str:
    return f"354396-20260525-{n:010d}"


async def _no_5xx(responses: list[httpx.Response]) -> Counter[int]:
    statuses = Counter(r.status_code for r in responses)
    assert not [s for s in statuses if s >= 500], [
        r.text for r in responses if r.status_code >= 500
    ][:3]
    return statuses


async def test_a_duplicate_storm_behind_pgbouncer_restores_each_order_once(
    servers: list[str],
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        one, two = servers
        await http.put(f"{one}/stock/STORM", json={"quantity": 100})
        for n in range(10):
            execution = {
                "order_no": _rakuten(n),
                "mall": "rakuten",
                "items": [{"sku": "STORM", "quantity": 2}],
            }
            assert (await http.post(f"{two}/sync-executions", json=execution)).status_code == 201
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{servers[i % 2]}/restocks",
                    json={
                        "mall": "rakuten",
                        "restore_stock": True,
                        "orders": [{"order_no": _rakuten(i % 10), "mall_cancel_succeeded": True}],
                    },
                )
                for i in range(120)
            )
        )
        stock = (await http.get(f"{one}/stock/STORM")).json()

    await _no_5xx(responses)
    codes = Counter(r.json()["results"][0]["code"] for r in responses)
    assert codes == {"restored": 10, "already_restored": 110}
    assert stock["quantity"] == 100


async def test_the_contract_holds_behind_pgbouncer(servers: list[str]) -> None:
    one, two = servers
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=30) as http:

        async def call(method: str, url: str, **kw: object) -> httpx.Response:
            response = await http.request(method, url, **kw)  # type: ignore[arg-type]
            answers.append(response)
            return response

        await call("PUT", f"{one}/stock/CAP-01", json={"quantity": 5})
        await call("PUT", f"{two}/stock/GONE-01", json={"quantity": 5})
        execution = {
            "order_no": _rakuten(100),
            "mall": "rakuten",
            "items": [{"sku": "CAP-01", "quantity": 2}, {"sku": "GONE-01", "quantity": 1}],
        }
        await call("POST", f"{one}/sync-executions/batch", json={"executions": [execution]})
        await call("DELETE", f"{two}/stock/GONE-01")
        cancel = {
            "mall": "rakuten",
            "restore_stock": True,
            "orders": [{"order_no": _rakuten(100), "mall_cancel_succeeded": True}],
        }
        failed = await call("POST", f"{two}/restocks", json=cancel)
        record = await call("GET", f"{one}/restocks/{_rakuten(100)}")
        listed = await call("GET", f"{two}/restocks?status=failed")
        adjust = {"delta": 1, "reason": "手動加算", "order_no": _rakuten(100)}
        keyed = {"Idempotency-Key": "pgbouncer-adjust"}
        first = await call("POST", f"{one}/stock/CAP-01/adjustments", json=adjust, headers=keyed)
        again = await call("POST", f"{two}/stock/CAP-01/adjustments", json=adjust, headers=keyed)
        note = {"note": "確認済み", "resolved_by": "yamada"}
        resolved = await call("POST", f"{one}/restocks/{_rakuten(100)}/resolution", json=note)
        movements = await call("GET", f"{two}/stock/CAP-01/movements")
        changes = await call("GET", f"{one}/stock-changes")
        ready = await call("GET", f"{two}/ready")

    await _no_5xx(answers)
    assert failed.json()["results"][0]["code"] == "product_not_found"
    assert record.json()["missing_skus"] == ["GONE-01"]
    assert [r["order_no"] for r in listed.json()["items"]] == [_rakuten(100)]
    assert first.json()["quantity"] == 4  # 5 - 2 + 1
    assert (again.headers["idempotent-replayed"], again.content) == ("true", first.content)
    assert resolved.json()["status"] == "resolved"
    assert [m["reason"] for m in movements.json()["items"]] == [
        "set",
        "sync_execution",
        "adjustment",
    ]
    assert {"CAP-01", "GONE-01"} <= {c["sku"] for c in changes.json()["items"]}
    assert ready.status_code == 200


# asyncpg names a process's first named statement so; another client's server connection
# may hold that name already.
FIRST_NAME = "__asyncpg_stmt_1__"
POOLER_LINE_HEAD, POOLER_LINE_TAIL = POOLER_IN_TRANSACTION_MODE.split("{error}")


async def _pgbouncer_client(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_args(url), statement_cache_size=0)


def _cli(url: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RESTOCK_DB_POOLER"}
    return subprocess.run(
        [sys.executable, "-m", "restock_service", *command],
        env={**env, "RESTOCK_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def through_pgbouncer(pg_admin_dsn: str, pgbouncer: int) -> Iterator[str]:
    """A fresh database reached through PgBouncer, without RESTOCK_DB_POOLER. A `check`
    has run on it: in transaction mode its one server connection keeps the statements
    that process named, from ``FIRST_NAME`` on, for the next client."""
    with migrated_pg_database(pg_admin_dsn) as direct:
        through = direct.replace(":5432/", f":{pgbouncer}/")
        first = _cli(through, "check")
        assert first.returncode == 0, first.stderr
        yield through


@pytest.mark.parametrize(
    ("command", "status"),
    [(["migrate"], 1), (["serve", "--migrate"], 1), (["serve"], 1), (["check"], 2)],
)
def test_without_the_pooler_setting_a_command_says_so_in_one_line(
    through_pgbouncer: str, command: list[str], status: int
) -> None:
    if command[0] == "serve":
        command = [*command, "--port", str(free_port())]

    result = _cli(through_pgbouncer, *command)

    assert result.returncode == status, result.stderr
    taken = f'prepared statement "{FIRST_NAME}" already exists'
    assert result.stderr.splitlines() == [
        "restock-service: " + POOLER_IN_TRANSACTION_MODE.format(error=taken)
    ]


def _says_the_pooler_lost_a_statement(text: str) -> bool:
    return (
        text.startswith(POOLER_LINE_HEAD)
        and text.endswith(POOLER_LINE_TAIL)
        and "does not exist" in text
    )


async def test_without_the_pooler_setting_a_lost_statement_is_a_503_that_names_the_setting(
    through_pgbouncer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The statements the service prepared on the one server connection, then that
    connection taken by another client: PgBouncer sends the service's next transactions to
    a server connection that never saw them."""
    app = create_app(Settings(database_url=through_pgbouncer, db_pool_size=1))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        assert (await http.get("/stock/CAP-01")).status_code == 404
        assert (await http.get("/ready")).status_code == 200
        assert (await http.get("/console/failures")).status_code == 200
        other = await _pgbouncer_client(through_pgbouncer)
        try:
            async with other.transaction():
                await other.execute("SELECT 1")  # holds the server connection
                read = await http.get("/stock/CAP-01")
                ready = await http.get("/ready")
                page = await http.get("/console/failures")
        finally:
            await other.close()

    assert read.status_code == 503, read.text
    assert read.headers["retry-after"]
    assert ready.status_code == 503
    assert _says_the_pooler_lost_a_statement(ready.json()["detail"]), ready.text
    assert page.status_code == 503, page.text  # the console's page that says so, not a 500
    assert page.headers["retry-after"]
    assert console.text("unavailable") in page.text
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(_says_the_pooler_lost_a_statement(m.split(": ", 1)[1]) for m in logged), logged
