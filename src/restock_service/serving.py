"""How ``serve`` runs uvicorn: its settings, a header deadline, problem documents for
protocol errors, and a supervisor that reports a dead worker as an error."""

import functools
import logging
import signal
from asyncio import TimerHandle, Transport

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from restock_service.api.errors import PROBLEM_JSON, TITLES
from restock_service.config import Settings
from restock_service.schemas import Problem

log = logging.getLogger(__name__)

APP = "restock_service.api:create_app"


@functools.cache
def _header_timeout_s() -> float:
    # Read in each worker process: a spawned worker gets the class, not its attributes.
    return Settings().header_timeout_s


def _problem(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer with a problem document, which closes its connection."""
    title = TITLES[status]
    problem = Problem(title=title, status=status, detail=detail)
    body = problem.model_dump_json(exclude_none=True).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's line and headers,
    counted from its first byte (uvicorn has none: a client sending a byte at a time
    would hold its connection for ever), and problem documents for malformed requests."""

    _header_deadline: TimerHandle | None = None
    _in_headers = False

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that has sent nothing yet is an idle one: the keep-alive bound.
        self._arm(self.timeout_keep_alive)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._arm(_header_timeout_s())

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_problem(400, msg))
        self.transport.close()

    def _arm(self, delay_s: float) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(delay_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if not self._in_headers:
            self.transport.close()  # nothing came at all: an idle connection
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined request: close after this answer
            return
        detail = f"the request's headers did not arrive within {_header_timeout_s():g} s"
        self.transport.write(_problem(408, detail))
        self.transport.close()


def _ending(status: int | None) -> str:
    if status is None:
        return "ended with no exit status"
    if status < 0:
        return f"was killed by {signal.Signals(-status).name} (exit status {128 - status})"
    return f"exited with status {status}"


class Supervisor(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, which reports a replaced worker at INFO
    without its exit status: this one adds an ERROR line that has it. (A worker that stops
    answering the supervisor's ping is killed by it with SIGKILL, and shows as such.)"""

    def keep_subprocess_alive(self) -> None:
        before = list(self.processes)
        super().keep_subprocess_alive()
        for old, new in zip(before, self.processes, strict=True):
            if new is not old:
                log.error(
                    "worker [%s] %s; worker [%s] replaces it",
                    old.pid,
                    _ending(old.exitcode),
                    new.pid,
                    extra={"worker_pid": old.pid, "exit_status": old.exitcode},
                )


def _stop_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run(settings: Settings, host: str, port: int, workers: int) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a requested stop, whatever ``workers`` is."""
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=Protocol,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours: same format, request ids
        access_log=settings.access_log,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        # Forwarded headers from anyone else are the client's own say: believed, they would
        # let one client pass for many (the console's sign-in limit counts addresses).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )
    # uvicorn re-raises the signal it stopped on once it is done: with this handler in place
    # that ends the process with 0, as the supervisor of several workers does.
    signal.signal(signal.SIGTERM, _stop_cleanly)
    if workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
