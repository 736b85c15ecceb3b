"""Keys kept in the database (contract v1.3), besides those of RESTOCK_API_KEYS.

A key is made by ``restock-service keys add`` or ``POST /merchants/{id}/keys``, shown once,
and kept only as its digest. Every process checks a presented key against the configured
keys first, then by digest in the database, and keeps what it found for at most
``Keyring.TTL_S``: a revoked key is refused everywhere within that, well inside the
contract's 5 seconds. No HTTP framework here: the Gate (api/middleware.py) and the
platform's calls (platform.py) use it.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from restock_service.access import ApiKeys, Caller, Role, digest
from restock_service.errors import Conflict, NotFound

# A key's last use is noted at most this often (per key and process): the lookup that
# notes it runs at most every Keyring.TTL_S, and writes only when the noted use is older.
USE_NOTED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as listed: never its key material."""

    merchant_id: str  # PLATFORM for a platform key
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None


class KeyNameTaken(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"the name {name!r} is in use: a key has it, or had it and was revoked "
            "(a name names one key for good, as the actor of what it wrote)"
        )


class ConfiguredKey(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"the key {name!r} is one of RESTOCK_API_KEYS: remove it there, and restart"
        )


class NoSuchKey(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no key {name!r} is in use")


class KeyLookups(Protocol):
    """What the keyring asks the database (the Store implements it)."""

    async def api_key(self, digest: bytes, now: datetime, noted_before: datetime) -> Caller | None:
        """Who holds the key of ``digest`` (not revoked), noting its use at ``now`` when the
        use noted last is from before ``noted_before``; None when no such key is in use."""

    async def api_keys_exist(self) -> bool:
        """Whether any key was ever made in the database, revoked or not."""


class Keyring:
    """The keys one process knows: those of RESTOCK_API_KEYS, read at start, and those of
    the database, each digest's answer kept for at most ``ttl_s`` (found or not, so that
    guessed keys cost one lookup per ``ttl_s`` each, and at most ``KEPT`` of them).

    A deployment with no key at all serves everyone (contract v1). Once a key is made in the
    database it asks for keys for good: revoking every key does not open it again.
    """

    TTL_S = 2.0
    KEPT = 10_000

    def __init__(
        self,
        configured: ApiKeys,
        *,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self._names = {(caller.merchant, caller.name) for _, caller in configured.entries}
        self.ttl_s = ttl_s
        self._clock = clock
        self._kept: dict[bytes, tuple[float, asyncio.Future[Caller | None]]] = {}
        self._closed = configured.enabled
        self._look_again_at = 0.0

    def is_configured(self, merchant_id: str, name: str) -> bool:
        """Whether RESTOCK_API_KEYS has a key of that name at that merchant."""
        return (merchant_id, name) in self._names

    async def enabled(self, lookups: KeyLookups) -> bool:
        """Whether calls need a key: some key is configured, or was ever made."""
        if not self._closed and self._clock() >= self._look_again_at:
            self._look_again_at = self._clock() + self.ttl_s
            try:
                self._closed = await lookups.api_keys_exist()
            except BaseException:
                self._look_again_at = 0.0
                raise
        return self._closed

    async def caller_of(self, presented: str, lookups: KeyLookups) -> Caller | None:
        """Who holds ``presented``: a configured key (compared in constant time), else one
        of the database's, found by its digest."""
        caller = self.configured.caller_of(presented)
        if caller is not None:
            return caller
        return await self._stored(digest(presented), lookups)

    def forget(self) -> None:
        """Drop what this process found, after it revoked a key: here the key is refused at
        once, elsewhere within ``ttl_s``."""
        self._kept.clear()

    async def _stored(self, found_by: bytes, lookups: KeyLookups) -> Caller | None:
        now = self._clock()
        kept = self._kept.get(found_by)
        if kept is None or kept[0] <= now:
            if len(self._kept) >= self.KEPT:
                self._kept = {d: k for d, k in self._kept.items() if k[0] > now}
                if len(self._kept) >= self.KEPT:
                    self._kept.clear()
            at = datetime.now(UTC)
            task = asyncio.ensure_future(lookups.api_key(found_by, at, at - USE_NOTED_EVERY))
            task.add_done_callback(_retrieved)
            kept = (now + self.ttl_s, task)  # one lookup at a time per digest
            self._kept[found_by] = kept
        try:
            return await asyncio.shield(kept[1])
        except Exception:
            if self._kept.get(found_by) is kept:  # the next request looks again
                del self._kept[found_by]
            raise


def _retrieved(task: "asyncio.Future[Caller | None]") -> None:
    """Mark a lookup's failure as seen: every request that awaited it has its own copy."""
    if not task.cancelled():
        task.exception()
