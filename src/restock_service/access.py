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
class ApiKeys:
    """The configured keys as (sha256 digest, role) pairs; no key is kept in clear."""

    entries: tuple[tuple[bytes, Role], ...]

    @classmethod
    def parse(cls, raw: str) -> "ApiKeys":
        """Parse ``"key1:writer,key2:reader"``; several keys may share a role (rotation)."""
        entries = []
        for position, item in enumerate(filter(None, (p.strip() for p in raw.split(","))), 1):
            key, sep, role = (part.strip() for part in item.rpartition(":"))
            if not sep or not key or role not in Role.__members__.values():
                raise ValueError(f"entry {position} must look like KEY:writer or KEY:reader")
            entries.append((_digest(key), Role(role)))
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, comparing against every key in constant time."""
        digest = _digest(presented)
        found = None
        for known, role in self.entries:
            if hmac.compare_digest(known, digest):
                found = role
        return found


def allows(role: Role, method: str) -> bool:
    """A writer may do everything; a reader only reads."""
    return role is Role.WRITER or method.upper() in READ_METHODS


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
