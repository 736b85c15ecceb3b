"""Real `restock-service serve` processes for tests that need more than one process."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One server process on a free port; start it, stop it gently, or kill it outright."""

    def __init__(self, database_url: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "RESTOCK_DATABASE_URL": database_url, **env}
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "restock_service",
                "serve",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self._wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self.log.close()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _wait_ready(self, timeout_s: float = 30) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server at {self.url} was not ready within {timeout_s}s")


@contextmanager
def running_servers(database_url: str, count: int, **env: str) -> Iterator[list[str]]:
    """Start ``count`` server processes on one database; yield their base URLs."""
    with ExitStack() as stack:
        servers = []
        for _ in range(count):
            server = Server(database_url, **env)
            stack.callback(server.close)
            servers.append(server.start())
        yield [s.url for s in servers]
