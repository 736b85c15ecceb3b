"""Behind PgBouncer in transaction mode (Debian's 1.18), with two service processes: the
contract holds, no request answers 5xx, and a restock happens once per order.

With ``CI=true`` a missing pgbouncer fails the run; elsewhere these tests skip, saying why.
"""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, migrated_pg_database
from tests.servers import free_port, running_servers

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
