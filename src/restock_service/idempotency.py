"""Idempotency keys (contract v1.2): a write retried with its key gets its first answer
again, and takes effect once.

A keyed write goes through three steps, whatever the route and the database:

1. **Claim.** The store records the caller's key as held by this request until
   ``now + lock_s``, unless the key is already held (``state_of`` decides). A key held by a
   stored answer is a replay (the same fingerprint) or a mismatch; a key held by a live
   claim is in flight.
2. **Work, with the answer.** The request runs in one unit of the store. Its answer, unless
   it is a 5xx, is stored in that same unit, on the condition that this request's claim
   still holds: a stored answer exists exactly when the effect committed, and a request
   whose claim was taken over (it ran past ``lock_s``) commits nothing.
3. **Release.** A 5xx answer is not stored (nothing took effect); the unit rolls back and
   the claim is dropped, so that a retry is processed afresh at once.

A request whose process died leaves its claim, which is free again at ``locked_until``.
Forgotten keys (past ``expires_at``) count as absent, and the store removes them in
bounded batches (``Store.purge_keys``).
"""

import asyncio
import hashlib
import logging
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import ClassVar, Protocol

from restock_service.errors import Conflict, FieldProblem, InvalidRequest
from restock_service.retry import Enclosure, Runner

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The methods of the writes that accept a key (every POST, PUT and DELETE route).
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
IN_FLIGHT_RETRY_AFTER_S = 1
_KEY = re.compile(rb"[!-~]{1,255}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a request was answered: enough to answer it again, byte for byte."""

    status: int
    content_type: str
    body: bytes

    @property
    def storable(self) -> bool:
        """5xx answers are not stored: nothing took effect, so a retry runs afresh."""
        return self.status < 500


@dataclass(frozen=True, slots=True)
class KeyRow:
    """What the store holds for one caller's key."""

    fingerprint: bytes
    token: str
    locked_until: datetime | None
    expires_at: datetime
    answer: Answer | None


class KeyState(Enum):
    FREE = "free"  # absent, forgotten, or a claim whose request died
    STORED = "stored"
    IN_FLIGHT = "in_flight"


def state_of(row: KeyRow | None, now: datetime) -> KeyState:
    """Whether a request may claim the key now. The PostgreSQL claim statement checks the
    same (tests/test_idempotency.py runs both stores through each state)."""
    if row is None or row.expires_at <= now:
        return KeyState.FREE
    if row.answer is not None:
        return KeyState.STORED
    if row.locked_until is not None and row.locked_until > now:
        return KeyState.IN_FLIGHT
    return KeyState.FREE


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's claim on a key, or what held the key instead (``held``)."""

    owner: str
    key: str
    fingerprint: bytes
    token: str
    locked_until: datetime
    expires_at: datetime
    held: KeyRow | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A keyed request's answer, and whether it was stored (committed with its effect)."""

    answer: Answer
    stored: bool


class KeyStore(Protocol):
    """The part of the store that keeps keys (store/ implements it per database)."""

    async def claim_key(self, claim: Claim, now: datetime) -> KeyRow | None:
        """Take the key for ``claim`` when ``state_of`` says it is free and return None;
        otherwise return the row that holds it."""

    async def keyed(self, claim: Claim, work: Callable[[], Awaitable[Answer]]) -> Done | None:
        """Run ``work`` as one unit with its answer (``run_keyed``); None when the claim no
        longer held at commit, and nothing was done."""

    async def release_key(self, claim: Claim) -> None:
        """Drop the claim, unless an answer was stored under it."""

    async def purge_keys(self, now: datetime, limit: int) -> int:
        """Remove up to ``limit`` forgotten keys; how many were removed."""


class RolledBack(Exception):
    """Ends a keyed unit without a commit. ``answer`` is what the request gets (None when
    its claim was lost); ``failure`` is the database's, when one caused it."""

    def __init__(self, answer: Answer | None, failure: Exception | None = None) -> None:
        super().__init__("keyed unit rolled back")
        self.answer = answer
        self.failure = failure


def commit_or_roll_back(enclosure: Enclosure, answer: Answer) -> None:
    """Raise RolledBack unless ``answer`` may be stored with the unit's effect: the unit
    failed in the database (the request may have answered anything), or it is a 5xx."""
    if enclosure.failure is not None or not answer.storable:
        raise RolledBack(answer, enclosure.failure)


async def run_keyed(
    runner: Runner,
    sqlstate: Callable[[Exception], str | None],
    unit: Callable[[Enclosure], Awaitable[Answer]],
) -> Done | None:
    """Run an adapter's keyed ``unit`` with the retry policy: it is run again whole when the
    database failure that rolled it back is retryable (a deadlock, say)."""

    def retryable(exc: Exception) -> str | None:
        failure = exc.failure if isinstance(exc, RolledBack) else exc
        return sqlstate(failure) if failure is not None else None

    try:
        return Done(await runner.run_enclosing(unit, retryable), stored=True)
    except RolledBack as rolled_back:
        return None if rolled_back.answer is None else Done(rolled_back.answer, stored=False)


# --- the request's side ----------------------------------------------------------------------


def parse_key(raw: bytes) -> str:
    """The key as sent, if it is 1-255 visible ASCII characters; 400 otherwise."""
    if not _KEY.fullmatch(raw):
        raise InvalidKey("must be 1 to 255 visible ASCII characters (0x21-0x7E)")
    return raw.decode("ascii")


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests the same request: method, path and body bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def new_claim(
    owner: str, key: str, request: bytes, now: datetime, *, lock_s: float, ttl_s: float
) -> Claim:
    """A fresh claim by ``owner`` on ``key`` for the request whose fingerprint is ``request``."""
    return Claim(
        owner=owner,
        key=key,
        fingerprint=request,
        token=secrets.token_hex(16),
        locked_until=now + timedelta(seconds=lock_s),
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
    store: KeyStore,
    claim: Claim,
    now: datetime,
    work: Callable[[], Awaitable[Answer]],
) -> tuple[Outcome, Answer]:
    """Answer a keyed request: replay its stored answer, or run ``work`` once and store
    what it answered with its effect. Raises KeyReused (422) or KeyInFlight (409)."""
    for _ in range(2):  # a claim lost at commit is read again once, then it is in flight
        held = await store.claim_key(claim, now)
        if held is not None:
            if held.fingerprint != claim.fingerprint:
                raise KeyReused()
            if state_of(held, now) is KeyState.IN_FLIGHT:
                raise KeyInFlight()
            assert held.answer is not None
            return Outcome.REPLAYED, held.answer
        try:
            done = await store.keyed(claim, work)
        except Exception:
            await _release(store, claim)
            raise
        if done is not None:
            if not done.stored:
                await _release(store, claim)
            return Outcome.ANSWERED, done.answer
    raise KeyInFlight()


async def _release(store: KeyStore, claim: Claim) -> None:
    """Free the key for a retry at once; when that fails, it is free at ``locked_until``."""
    try:
        await store.release_key(claim)
    except Exception as exc:
        log.warning("could not release idempotency key %r: %r", claim.key, exc)


PURGE_BATCH = 1000


async def purge_forever(store: KeyStore, every_s: float, batch: int = PURGE_BATCH) -> None:
    """Remove forgotten keys about every ``every_s`` (jittered, so that workers spread
    out), a bounded batch per statement, until a batch comes back short."""
    while True:
        await asyncio.sleep(every_s * (0.5 + random.random()))
        try:
            while await store.purge_keys(datetime.now(UTC), batch) == batch:
                pass
        except Exception as exc:
            log.warning("could not remove forgotten idempotency keys: %r", exc)
