"""API keys: parsed once, kept only as digests, compared in constant time."""

import hashlib
import hmac
import json
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
        """Parse ``"key1:writer,key2:reader"`` (each named ``key-`` + its digest's first 8 hex
        digits), or a JSON list that names them: ``[{"name": …, "key": …, "role": …}]``.
        Several keys may share a role (rotation); names and keys are unique."""
        if raw.strip().startswith("["):
            entries = [_named(position, item) for position, item in enumerate(_json(raw), 1)]
        else:
            entries = []
            items = filter(None, (p.strip() for p in raw.split(",")))
            for position, item in enumerate(items, 1):
                key, sep, role = (part.strip() for part in item.rpartition(":"))
                if not sep or not key or role not in Role.__members__.values():
                    raise ValueError(f"entry {position} must look like KEY:writer or KEY:reader")
                digest = _digest(key)
                entries.append((digest, Caller(f"key-{digest.hex()[:8]}", Role(role))))
        for what, values in (
            ("name", [caller.name for _, caller in entries]),
            ("key", [digest.hex() for digest, _ in entries]),
        ):
            repeated = {v for v in values if values.count(v) > 1}
            if repeated:
                shown = sorted(repeated) if what == "name" else "(not shown)"
                raise ValueError(f"each {what} may appear once; repeated: {shown}")
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


def _json(raw: str) -> list[object]:
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list of keys: {exc.msg} at character {exc.pos}") from None
    if not isinstance(items, list):
        raise ValueError("not a JSON list of keys")
    return items


def _named(position: int, item: object) -> tuple[bytes, Caller]:
    """One entry of the JSON form: ``{"name": 1-64 characters, "key": …, "role": …}``."""
    shape = 'must look like {"name": "yamada", "key": "…", "role": "writer"}'
    if not isinstance(item, dict) or set(item) != {"name", "key", "role"}:
        raise ValueError(f"entry {position} {shape}")
    name, key, role = item["name"], item["key"], item["role"]
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64 or name != name.strip():
        raise ValueError(
            f"entry {position}: name must be 1 to 64 characters, without spaces around"
        )
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"entry {position}: key must be a non-empty string")
    if role not in Role.__members__.values():
        raise ValueError(f"entry {position}: role must be writer or reader")
    return _digest(key.strip()), Caller(name, Role(role))
