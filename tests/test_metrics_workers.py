"""/metrics under `serve --workers 2`: every scrape counts every request of every worker
(prometheus_client's multiprocess mode), and the pool gauges sum the workers still running."""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from restock_service.metrics import MULTIPROC_DIR
from tests.servers import Server
from tests.test_operations import sample

pytestmark = pytest.mark.processes

ROUTE = 'restock_http_requests_total{method="GET",route="/stock/{sku}",status="404"}'


def served_by_worker(
    directory: Path, route: str = "/stock/{sku}", status: str = "404"
) -> dict[int, float]:
    """Each worker's own count of GET requests of ``route`` answered ``status`` (by default
    those above), from its own file."""
    counts = {}
    wanted = {"method": "GET", "route": route, "status": status}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for s in metric.samples:
                if s.name == "restock_http_requests_total" and s.labels == wanted:
                    counts[int(path.stem.split("_")[1])] = s.value
    return counts


async def get_stock(url: str, requests: int) -> None:
    """``requests`` calls, each on a connection of its own, so that either worker may
    accept it."""

    async def one(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:
            assert (await fresh.get(f"/stock/NO-SUCH-{n}")).status_code == 404

    for start in range(0, requests, 8):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 8, requests))))


def scrape(url: str) -> str:
    with httpx.Client(timeout=10) as fresh:  # a new connection: any worker may answer
        response = fresh.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return response.text


async def pg_connections(pg_database_url: str) -> int:
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'restock-service'"
        )
        return count
    finally:
        await conn.close()


async def until(check: Callable[[], object], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check_result = check()
            if asyncio.iscoroutine(check_result):
                await check_result
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def worker_pids(server: Server) -> set[int]:
    assert server.process is not None
    parent = server.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    # Not multiprocessing's resource tracker, also a child.
    return {int(pid) for pid in children if b"spawn_main" in _cmdline(int(pid))}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


async def test_every_scrape_counts_every_request_of_both_workers(
    pg_database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    server = Server(pg_database_url, "--workers", "2", **{MULTIPROC_DIR: str(directory)})
    try:
        server.start()
        sent = 0
        while len(served_by_worker(directory)) < 2:  # the kernel picks the accepting worker
            assert sent < 2000, f"one worker accepted every connection: {server.stderr()}"
            await get_stock(server.url, 40)
            sent += 40
        by_worker = served_by_worker(directory)
        assert set(by_worker) == worker_pids(server)
        assert all(count > 0 for count in by_worker.values())
        assert sum(by_worker.values()) == sent

        for _ in range(10):
            text = scrape(server.url)
            assert sample(text, ROUTE) == sent, text

        # The pool gauges add up both workers' pools: what PostgreSQL sees.
        text = scrape(server.url)
        size = sample(text, "restock_db_pool_size")
        assert size is not None and size >= 2  # each worker opened at least one
        assert size == await pg_connections(pg_database_url)
        assert sample(text, "restock_db_pool_checked_out") == 0
        assert sample(text, "restock_db_pool_checked_in") == size
    finally:
        server.close()


async def test_a_killed_worker_leaves_its_counts_and_takes_its_pool_out_of_the_sum(
    pg_database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    server = Server(pg_database_url, "--workers", "2", **{MULTIPROC_DIR: str(directory)})
    try:
        server.start()
        sent = 0
        while len(served_by_worker(directory)) < 2:
            assert sent < 2000, "one worker accepted every connection"
            await get_stock(server.url, 40)
            sent += 40
        victim = max(served_by_worker(directory), key=lambda pid: pid)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> None:
            pids = worker_pids(server)
            assert victim not in pids and len(pids) == 2

        await until(replaced)

        async def pool_matches_postgres() -> None:
            text = scrape(server.url)
            assert sample(text, ROUTE) == sent  # the dead worker's requests still count
            assert sample(text, "restock_db_pool_size") == await pg_connections(pg_database_url)

        await until(pool_matches_postgres)
        assert not list(directory.glob(f"gauge_*_{victim}.db"))
        assert list(directory.glob(f"counter_{victim}.db"))
    finally:
        server.close()


@pytest.mark.parametrize("given", [True, False], ids=["operator_dir", "private_dir"])
async def test_a_restarted_server_does_not_count_the_previous_run(
    pg_database_url: str, tmp_path: Path, given: bool
) -> None:
    """The operator's directory is emptied at start; without one, each serve makes its own
    and removes it at the end."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    if given:
        env[MULTIPROC_DIR] = str(tmp_path / "metrics")
    for run in range(2):
        server = Server(pg_database_url, "--workers", "2", **env)
        if not given:
            server.env.pop(MULTIPROC_DIR, None)
        try:
            server.start()
            if not given:
                (private,) = temp.iterdir()
                assert private.name.startswith("restock-metrics-")
            await get_stock(server.url, 10 + run)
            for _ in range(4):
                assert sample(scrape(server.url), ROUTE) == 10 + run
        finally:
            server.close()
        assert server.process is not None and server.process.returncode is not None
        if not given:
            assert not list(temp.iterdir())  # the private directory is gone


def test_serve_refuses_a_metrics_directory_that_holds_other_files(
    pg_database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "restock.db").write_bytes(b"not metrics")
    server = Server(pg_database_url, "--workers", "2", **{MULTIPROC_DIR: str(directory)})
    try:
        with pytest.raises(RuntimeError, match="holds more than metrics"):
            server.start()
        assert server.process is not None and server.process.returncode == 1
    finally:
        server.close()
    assert (directory / "restock.db").read_bytes() == b"not metrics"
