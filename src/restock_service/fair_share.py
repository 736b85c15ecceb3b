"""Fair share (contract v1.3): one merchant cannot take the service from the others.

Each process serves at most ``places`` requests of one merchant at once. A request past
that waits for one of its own merchant's places, before it has touched the database, for at
most ``queue_s``; when none frees in that time it is refused (429 with Retry-After) and
nothing is done. A burst of one merchant queues briefly and is served whole; another
merchant's requests never wait behind it.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from restock_service.errors import DomainError

RETRY_AFTER_S = 1


class TooManyAtOnce(DomainError):
    status = 429
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": str(RETRY_AFTER_S)}

    def __init__(self) -> None:
        super().__init__(
            "too many requests of this merchant at once; "
            f"send it again after {RETRY_AFTER_S} s, and nothing was done"
        )


@dataclass(slots=True)
class _Merchant:
    places: asyncio.Semaphore
    users: int = 0  # requests holding or awaiting a place


@dataclass(slots=True)
class FairShare:
    places: int
    queue_s: float
    _merchants: dict[str, _Merchant] = field(default_factory=dict)

    async def enter(self, merchant: str) -> None:
        """Take one of the merchant's places, waiting up to ``queue_s``; raise TooManyAtOnce
        when none frees. Every ``enter`` that returns is followed by one ``leave``."""
        entry = self._merchants.get(merchant)
        if entry is None:
            entry = self._merchants[merchant] = _Merchant(asyncio.Semaphore(self.places))
        entry.users += 1
        if not entry.places.locked():
            await entry.places.acquire()  # free: taken without waiting
            return
        try:
            async with asyncio.timeout(self.queue_s):
                await entry.places.acquire()
        except TimeoutError:
            self._forget(merchant, entry)
            raise TooManyAtOnce() from None

    def leave(self, merchant: str) -> None:
        entry = self._merchants[merchant]
        entry.places.release()
        self._forget(merchant, entry)

    def _forget(self, merchant: str, entry: _Merchant) -> None:
        """Count one request less; a merchant with none is forgotten (memory stays bounded by
        the merchants with requests under way)."""
        entry.users -= 1
        if entry.users == 0:
            del self._merchants[merchant]
