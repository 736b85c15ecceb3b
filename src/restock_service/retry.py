"""The one retry policy and the one deadline, for every unit of database work.

A unit is a transaction (SQLite) or a statement (PostgreSQL). It is run again when the
database says that a rerun resolves the failure (a deadlock, a serialization failure, which
includes a statement that found what it read had moved: ``restock_retry_if`` in migration
0003), at most ``db_retry_attempts`` times, after a short jittered pause. The whole unit,
retries included, gets ``db_deadline_s``.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs that mean "run the whole unit again": serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class Runner:
    """Runs units of work with the retry policy, each within the deadline."""

    def __init__(self, *, attempts: int, deadline_s: float) -> None:
        self.attempts = attempts
        self.deadline_s = deadline_s
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def run(
        self, unit: Callable[[], Awaitable[T]], sqlstate: Callable[[Exception], str | None]
    ) -> T:
        """Await ``unit()``, rerunning it while ``sqlstate`` of its failure is retryable."""
        return await self.within_deadline(self._with_retries(unit, sqlstate))

    async def _with_retries(
        self, unit: Callable[[], Awaitable[T]], sqlstate: Callable[[Exception], str | None]
    ) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await unit()
            except Exception as exc:
                if attempt == self.attempts or sqlstate(exc) not in RETRYABLE_SQLSTATES:
                    raise
                log.info("unit of work rerun after %s (attempt %d)", exc, attempt)
            # A pause longer each attempt and jittered, so that colliding units part ways.
            await asyncio.sleep(0.005 * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def within_deadline(self, unit: Coroutine[Any, Any, T]) -> T:
        """Await ``unit`` for at most the deadline, however long its cleanup would take.

        Past the deadline the unit is cancelled and left to roll back in the background (a
        hung server can keep a rollback waiting), and the caller gets TimeoutError at once.
        """
        task = asyncio.ensure_future(unit)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.deadline_s)
        except TimeoutError:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned unit's failure is expected, not news
