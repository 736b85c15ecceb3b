"""SIGTERM in two steps, so that a load balancer stops sending before the server stops taking.

uvicorn's own handler closes the listening socket at once. Wrapped by ``Drain``, a SIGTERM
first makes ``/ready`` answer 503 and every answer close its connection, for ``delay_s``
seconds while the server goes on serving; only then does uvicorn's handler run.
"""

import asyncio
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_Handler = Any  # what signal.getsignal returns: a callable, an int, or None


class Drain:
    """The drain of one worker process: when it began, and the wrapped SIGTERM handler."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.since: float | None = None
        self._previous: _Handler = None
        self._forwarded = False

    @property
    def draining(self) -> bool:
        return self.since is not None

    def install(self) -> bool:
        """Wrap the SIGTERM handler of the server this app runs in. Where no server has
        installed one (tests, the demo), SIGTERM is left alone; returns whether it wrapped."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        self._previous = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: set fields only; the loop does the rest (forward_when_due).
        again = self.since is not None
        if not again:
            self.since = time.monotonic()
        if again or self.delay_s == 0:  # a second SIGTERM, or no drain asked: stop now
            self._forward()

    def _forward(self) -> None:
        if not self._forwarded:
            self._forwarded = True
            self._previous(signal.SIGTERM, None)

    async def forward_when_due(self) -> None:
        """Hand SIGTERM on to the server once ``delay_s`` has passed since it came."""
        announced = False
        while not self._forwarded:
            await asyncio.sleep(0.1)
            if self.since is None:
                continue
            if not announced:
                announced = True
                log.info("SIGTERM: /ready answers 503 for %s s, then uvicorn stops", self.delay_s)
            if time.monotonic() - self.since >= self.delay_s:
                self._forward()
