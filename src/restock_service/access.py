"""API keys: parsed once, kept only as digests, compared in constant time."""

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    WRITER = "writer"
    READER = "reader"


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the name of the key it presented, and that key's role."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The configured keys as (sha256 digest, caller) pairs; no key is kept in clear.

    A key's name is ``key-`` and the first 8 hex digits of its SHA-256.
    """

    entries: tuple[tuple[bytes, Caller], ...]

    @classmethod
    def parse(cls, raw: str) -> "ApiKeys":
        """Parse ``"key1:writer,key2:reader"``; several keys may share a role (rotation)."""
        entries = []
        for position, item in enumerate(filter(None, (p.strip() for p in raw.split(","))), 1):
            key, sep, role = (part.strip() for part in item.rpartition(":"))
            if not sep or not key or role not in Role.__members__.values():
                raise ValueError(f"entry {position} must look like KEY:writer or KEY:reader")
            digest = _digest(key)
            entries.append((digest, Caller(f"key-{digest.hex()[:8]}", Role(role))))
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def caller_of(self, presented: str) -> Caller | None:
        """Who holds ``presented``, comparing against every key in constant time."""
        digest = _digest(presented)
        found = None
        for known, caller in self.entries:
            if hmac.compare_digest(known, digest):
                found = caller
        return found

    def role_of(self, presented: str) -> Role | None:
        caller = self.caller_of(presented)
        return caller.role if caller else None


def allows(role: Role, method: str) -> bool:
    """A writer may do everything; a reader only reads."""
    return role is Role.WRITER or method.upper() in READ_METHODS


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
