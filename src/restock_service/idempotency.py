"""Idempotency keys (contract v1.2): a write retried with its key gets its first answer
again, and takes effect once.

A keyed request is a ``Keyed``, handed to the store's write in the call's scope (scope.py):

1. **Taken with the effect.** The write takes the caller's key in the unit of its effect and
   keeps there, as the key's *receipt*, what the write returned to the request (on PostgreSQL
   the rows of its statements, kept by its own statement; on SQLite its result). So a key is
   held exactly when the effect committed, whatever dies when. When the key is held already
   (``state_of``), the write raises ``KeyHeld`` having done nothing, and the request's answer
   is void.
2. **Replayed from the receipt.** A request whose key holds a receipt is run again with the
   receipt in its context: the store answers its write from it and touches nothing, and the
   request renders the same answer again, byte for byte. A replay counts nothing.
3. **In flight.** A second request with the key while the first is still in its write: on
   PostgreSQL it does not get the key's advisory lock, writes nothing and is answered 409; on
   SQLite it waits for the write lock, and then replays.

A request that makes no write keeps nothing (its answer depends on nothing stored, so a
retry is answered the same, afresh). Forgotten keys (past ``expires_at``) count as absent,
and the store removes them in bounded batches (``Store.purge_keys``).
"""

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Protocol, TypeVar

from restock_service.errors import Conflict, FieldProblem, InvalidRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The methods of the writes that accept a key (every POST, PUT and DELETE route).
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
IN_FLIGHT_RETRY_AFTER_S = 1
_KEY = re.compile(rb"[!-~]{1,255}")


@dataclass(frozen=True, slots=True)
class KeyRow:
    """What the store holds for one caller's key."""

    fingerprint: bytes
    created_at: datetime
    expires_at: datetime
    receipt: bytes | None


class KeyState(Enum):
    FREE = "free"  # absent, forgotten, or a row left without a receipt
    STORED = "stored"


def state_of(row: KeyRow | None, now: datetime) -> KeyState:
    """Whether a request may take the key now. The keyed PostgreSQL statements check the
    same (tests/test_idempotency.py runs both stores through each state)."""
    if row is None or row.expires_at <= now or row.receipt is None:
        return KeyState.FREE
    return KeyState.STORED


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's claim on a key of its caller (``owner``) at its merchant. ``now`` is the
    request's time, kept with the key (a replay renders the time its first answer said)."""

    merchant: str
    owner: str
    key: str
    fingerprint: bytes
    now: datetime
    expires_at: datetime


@dataclass(slots=True)
class Keyed:
    """A keyed request, as its write sees it: the key to take with the effect, or, in a
    replay, the ``receipt`` to answer the write from. ``held`` is set by a write that found
    the key held; ``rows`` and ``replayed`` are the adapter's, for the unit under way."""

    claim: Claim
    receipt: bytes | None = None
    held: bool = False
    rows: list[Any] = field(default_factory=list)
    replayed: int = 0

    def restart(self) -> None:
        """A unit of work starts (again, after a retryable failure)."""
        self.rows.clear()
        self.replayed = 0


class KeyHeld(Exception):
    """Raised by a keyed write that found the key held (``Keyed.held``): it did nothing."""


def refuse(request: Keyed) -> KeyHeld:
    """What a keyed write raises when it finds the key of ``request`` held."""
    request.held = True
    return KeyHeld(f"the idempotency key {request.claim.key!r} is held")


class KeyStore(Protocol):
    """The part of the store that keeps keys (store/ implements it per database); its
    writes take the key of the ``Keyed`` request in their scope."""

    async def key(self, merchant: str, owner: str, key: str) -> KeyRow | None:
        """What holds the caller's key at the merchant, as it stands."""

    async def purge_keys(self, now: datetime, limit: int) -> int:
        """Remove up to ``limit`` forgotten keys; how many were removed."""


# --- the request's side ----------------------------------------------------------------------


# The console's forms' keys (console.form_claim): a namespace of their own among a caller's
# keys, which no key sent to the API enters. The owner column is as long as a key's name
# may be, so the prefix goes on the key.
CONSOLE_PREFIX = "console:"
_CONSOLE_PREFIX = CONSOLE_PREFIX.encode()


def parse_key(given: Sequence[bytes]) -> str:
    """The key of a request's ``given`` header values: one, of 1-255 visible ASCII
    characters, not in the console's namespace; 400 otherwise (two keys leave the request's
    key unknown)."""
    if len(given) != 1:
        raise InvalidKey("was sent more than once; send one key per request")
    (raw,) = given
    if not _KEY.fullmatch(raw):
        raise InvalidKey("must be 1 to 255 visible ASCII characters (0x21-0x7E)")
    if raw.startswith(_CONSOLE_PREFIX):
        raise InvalidKey(f"must not begin with {CONSOLE_PREFIX!r}, which the console's forms use")
    return raw.decode("ascii")


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests the same request: method, path and body bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def new_claim(
    merchant: str, owner: str, key: str, request: bytes, now: datetime, *, ttl_s: float
) -> Claim:
    """A fresh claim by ``owner`` at ``merchant`` on ``key`` for the request whose
    fingerprint is ``request``."""
    return Claim(
        merchant=merchant,
        owner=owner,
        key=key,
        fingerprint=request,
        now=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )


class InvalidKey(InvalidRequest):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__([FieldProblem((HEADER,), message, location="header")])


class KeyRequired(InvalidKey):
    def __init__(self) -> None:
        super().__init__("is required on every write (RESTOCK_IDEMPOTENCY_REQUIRED)")


class KeyReused(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(
            [
                FieldProblem(
                    (HEADER,),
                    "was used for another request (another method, path or body); "
                    "send a new key for a new request",
                    location="header",
                )
            ]
        )


class KeyInFlight(Conflict):
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": str(IN_FLIGHT_RETRY_AFTER_S)}

    def __init__(self) -> None:
        super().__init__(
            f"a request with this {HEADER} is still being processed; "
            f"send it again after {IN_FLIGHT_RETRY_AFTER_S} s to get its answer"
        )


class Outcome(Enum):
    ANSWERED = "answered"  # processed now
    REPLAYED = "replayed"


async def once(
    store: KeyStore, claim: Claim, now: datetime, work: Callable[[Keyed], Awaitable[T]]
) -> tuple[Outcome, T]:
    """Answer a keyed request: run ``work`` as the request, whose write takes the key; or,
    when the key is held, run it as the replay of the receipt the key holds. Raises
    KeyReused (422) or KeyInFlight (409)."""
    first = Keyed(claim)
    with contextlib.suppress(KeyHeld):  # (the app lets it through, as it does defects)
        answer = await work(first)
    if not first.held:
        return Outcome.ANSWERED, answer
    held = await store.key(claim.merchant, claim.owner, claim.key)
    if held is None or state_of(held, now) is not KeyState.STORED:
        raise KeyInFlight()  # in the write of another request (or it just failed)
    if held.fingerprint != claim.fingerprint:
        raise KeyReused()
    first_time = replace(claim, now=held.created_at)
    return Outcome.REPLAYED, await work(Keyed(first_time, receipt=held.receipt))


async def once_waiting(
    store: KeyStore,
    claim: Claim,
    work: Callable[[Keyed], Awaitable[T]],
    *,
    wait_s: float,
    poll_s: float = 0.05,
) -> tuple[Outcome, T]:
    """``once``, except that a request in flight with the key is waited for, up to about
    ``wait_s``, and its answer replayed: a person who clicked twice gets the first click's
    answer, not a refusal (PostgreSQL; on SQLite the write lock waits). Raises KeyReused, or
    KeyInFlight when the first request is still in its write after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await once(store, claim, claim.now, work)
        except KeyInFlight:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(poll_s)
        # The request has not been answered yet: it is made at this try's time, so that a
        # claim whose request died lapses for it.
        now = datetime.now(UTC)
        claim = replace(claim, now=now, expires_at=claim.expires_at + (now - claim.now))


PURGE_BATCH = 1000
# Removes up to ``limit`` rows that lapsed by ``now``; how many it removed.
Purge = Callable[[datetime, int], Awaitable[int]]


async def purge_forever(
    purges: Mapping[str, Purge], every_s: float, batch: int = PURGE_BATCH
) -> None:
    """Remove lapsed rows (``purges`` by what they remove: forgotten keys, lapsed
    sign-outs) about every ``every_s`` (jittered, so that workers spread out), a bounded
    batch per statement, until a batch comes back short."""
    while True:
        await asyncio.sleep(every_s * (0.5 + random.random()))
        for what, purge in purges.items():
            try:
                while await purge(datetime.now(UTC), batch) == batch:
                    pass
            except Exception as exc:
                log.warning("could not remove %s: %r", what, exc)
