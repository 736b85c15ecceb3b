"""The server behind a load balancer: keep-alive, slow clients, the drain after SIGTERM,
worker deaths and the exit status, on real `restock-service serve` processes."""

import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from restock_service.config import Settings
from restock_service.migrations import migrate
from tests.servers import Server

pytestmark = pytest.mark.processes


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: restock\r\n\r\n".encode()


def _answer(sock: socket.socket, timeout_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer read off ``sock``: its status, headers and body."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket, timeout_s: float = 5) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('serving') / 'restock.db'}"
    migrate(Settings(database_url=url))
    return url


@pytest.fixture(scope="module")
def server(sqlite_url: str) -> Iterator[Server]:
    """Default keep-alive; headers and bodies bounded at 1 s."""
    running = Server(sqlite_url, RESTOCK_HEADER_TIMEOUT_S="1", RESTOCK_BODY_TIMEOUT_S="1")
    try:
        yield running.start()
    finally:
        running.close()


def test_an_idle_keep_alive_connection_of_10_s_is_still_served(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_get("/health"))
        assert _answer(sock)[0] == 200
        time.sleep(10)  # uvicorn's default would have closed it at 5 s
        sock.sendall(_get("/health"))
        status, headers, _ = _answer(sock)

    assert status == 200
    assert headers.get("connection") != "close"


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(server: Server) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: restock\r\nX-Slow: " + b"x" * 100
    with _connect(server) as sock:
        began = time.monotonic()
        for byte in request:  # a byte every 0.2 s: each one would reset an idle timer
            sock.sendall(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                break
        status, headers, body = _answer(sock)
        elapsed = time.monotonic() - began

        assert status == 408
        assert headers["content-type"] == "application/problem+json"
        assert b"headers did not arrive within 1 s" in body
        assert 0.9 < elapsed < 3
        assert _closed(sock)


def test_a_body_that_stops_half_way_is_answered_408_and_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"PUT /stock/SLOW-1 HTTP/1.1\r\nHost: restock\r\n"
            b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n"
            b'{"quant'
        )
        status, headers, body = _answer(sock)

        assert status == 408
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert b"the request body did not arrive within 1 s" in body
        assert _closed(sock)
    assert httpx.get(f"{server.url}/stock/SLOW-1").status_code == 404


def test_a_malformed_request_is_answered_with_a_problem_document(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = _answer(sock)

    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert b'"status":400' in body


def test_sigterm_turns_ready_to_503_while_serving_then_stops_with_status_0(
    sqlite_url: str,
) -> None:
    server = Server(sqlite_url, RESTOCK_DRAIN_S="2").start()
    try:
        assert server.process is not None
        with _connect(server) as kept:
            kept.sendall(_get("/health"))
            assert _answer(kept)[0] == 200
            server.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            time.sleep(0.3)

            ready = httpx.get(f"{server.url}/ready", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["detail"] == "the process is stopping (SIGTERM)"
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
            # A connection opened before still gets its answer, and then is closed.
            kept.sendall(_get("/health"))
            status, headers, _ = _answer(kept)
            assert (status, headers["connection"]) == (200, "close")
            assert _closed(kept)
            assert time.monotonic() - began < 2

        assert server.process.wait(timeout=15) == 0
        assert time.monotonic() - began >= 2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=2)
    finally:
        server.close()


def _workers(parent: int) -> list[int]:
    """The uvicorn workers of a supervisor (its spawned children, not its resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(pid))
    return found


def _until(condition: "object", timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_ends_with_status_0_whatever_the_number_of_workers(
    pg_database_url: str, workers: str
) -> None:
    server = Server(pg_database_url, "--workers", workers).start()
    try:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0, server.stderr()
    finally:
        server.close()


def test_a_killed_worker_is_logged_as_an_error_with_its_exit_status(pg_database_url: str) -> None:
    server = Server(pg_database_url, "--workers", "2").start()
    try:
        assert server.process is not None
        parent = server.process.pid
        _until(lambda: len(_workers(parent)) == 2)
        victim = _workers(parent)[0]

        os.kill(victim, signal.SIGKILL)
        _until(lambda: f"worker [{victim}]" in server.stderr())
        _until(lambda: len(_workers(parent)) == 2 and victim not in _workers(parent))

        line = next(x for x in server.stderr().splitlines() if f"worker [{victim}]" in x)
        assert " ERROR " in line
        assert "killed by SIGKILL (exit status 137)" in line
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        server.close()
