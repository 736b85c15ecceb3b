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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from restock_service.access import ApiKeys, Caller, Role, digest
from restock_service.errors import Conflict, NotFound

T = TypeVar("T")

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

    async def api_keys(self, merchant_id: str | None) -> list[KeyRecord]:
        """The keys in use at ``merchant_id`` by name, or (None) every merchant's and the
        platform's, by merchant and name."""


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
        self._callers = frozenset(caller for _, caller in configured.entries)
        self._names = {(caller.merchant, caller.name) for caller in self._callers}
        self.ttl_s = ttl_s
        self._clock = clock
        self._kept: dict[object, tuple[float, asyncio.Future[Any]]] = {}
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
        hashed = digest(presented)
        found: Caller | None = await self._kept_for(
            hashed, lambda: lookups.api_key(hashed, *_noted_now())
        )
        return found

    async def in_use(self, caller: Caller, lookups: KeyLookups) -> bool:
        """Whether ``caller``'s key is still configured, or in use in the database (what a
        console session, which holds no key, asks on each request)."""
        if self.is_configured(caller.merchant, caller.name):
            return caller in self._callers
        records: list[KeyRecord] = await self._kept_for(
            ("in use at", caller.merchant), lambda: lookups.api_keys(caller.merchant)
        )
        return any(r.name == caller.name and r.role == caller.role for r in records)

    def forget(self) -> None:
        """Drop what this process found, after it revoked a key: here the key is refused at
        once, elsewhere within ``ttl_s``."""
        self._kept.clear()

    async def _kept_for(self, key: object, look: Callable[[], Awaitable[T]]) -> T:
        """What ``look`` found for ``key``, found at most ``ttl_s`` ago; one look at a time
        per key, shared by the requests that want it meanwhile."""
        now = self._clock()
        kept = self._kept.get(key)
        if kept is None or kept[0] <= now:
            if len(self._kept) >= self.KEPT:
                self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
                if len(self._kept) >= self.KEPT:
                    self._kept.clear()
            task = asyncio.ensure_future(look())
            task.add_done_callback(_retrieved)
            kept = (now + self.ttl_s, task)
            self._kept[key] = kept
        try:
            found: T = await asyncio.shield(kept[1])
        except Exception:
            if self._kept.get(key) is kept:  # the next request looks again
                del self._kept[key]
            raise
        return found


def _noted_now() -> tuple[datetime, datetime]:
    """A lookup's time, and the last use before which it notes this one."""
    at = datetime.now(UTC)
    return at, at - USE_NOTED_EVERY


def _retrieved(task: "asyncio.Future[Any]") -> None:
    """Mark a lookup's failure as seen: every request that awaited it has its own copy."""
    if not task.cancelled():
        task.exception()
