"""API keys: parsed once, kept only as digests, compared in constant time.

A key is a merchant's (roles writer and reader), or the platform's (``merchant`` PLATFORM),
held by the systems and staff that serve every merchant (roles writer, reader and admin,
which also manages merchants and keys). Contract v1.3.
"""

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum

from restock_service.tables import DEFAULT_MERCHANT, PLATFORM, is_merchant_id


class Role(StrEnum):
    WRITER = "writer"
    READER = "reader"
    ADMIN = "admin"  # a platform key's only


MERCHANT_ROLES = (Role.WRITER, Role.READER)
PLATFORM_PREFIX = "platform:"  # of a platform key's actor; no merchant key's name has it


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
KEY_NAME_LENGTH = 64
KEY_PREFIX = "rsk_"  # of every key made here, so that a secret scanner can tell one


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the name of the key it presented, that key's role, and its
    merchant (PLATFORM for a platform key)."""

    name: str
    role: Role
    merchant: str = DEFAULT_MERCHANT

    @property
    def platform(self) -> bool:
        return self.merchant == PLATFORM

    @property
    def actor(self) -> str:
        """What a write by this caller records as its actor (contract v1.2, v1.3)."""
        return PLATFORM_PREFIX + self.name if self.platform else self.name


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The configured keys as (sha256 digest, caller) pairs; no key is kept in clear.

    A key's name is ``key-`` and the first 8 hex digits of its SHA-256.
    """

    entries: tuple[tuple[bytes, Caller], ...]

    @classmethod
    def parse(cls, raw: str) -> "ApiKeys":
        """Parse ``"key1:writer,key2:reader"`` (each named ``key-`` + its digest's first 8 hex
        digits, ``default``'s), or a JSON list that names them: ``[{"name": …, "key": …,
        "role": …}]``, each with an optional ``"merchant"`` (``"*"``: a platform key).
        Several keys may share a role (rotation); keys are unique, and names within their
        merchant."""
        if raw.strip().startswith("["):
            entries = [_named(position, item) for position, item in enumerate(_json(raw), 1)]
        else:
            entries = []
            items = filter(None, (p.strip() for p in raw.split(",")))
            for position, item in enumerate(items, 1):
                key, sep, role = (part.strip() for part in item.rpartition(":"))
                if not sep or not key or role not in MERCHANT_ROLES:
                    raise ValueError(f"entry {position} must look like KEY:writer or KEY:reader")
                hashed = digest(key)
                entries.append((hashed, Caller(f"key-{hashed.hex()[:8]}", Role(role))))
        for what, values in (
            ("name", [f"{caller.merchant}/{caller.name}" for _, caller in entries]),
            ("key", [hashed.hex() for hashed, _ in entries]),
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
        hashed = digest(presented)
        found = None
        for known, caller in self.entries:
            if hmac.compare_digest(known, hashed):
                found = caller
        return found

    def role_of(self, presented: str) -> Role | None:
        caller = self.caller_of(presented)
        return caller.role if caller else None


def allows(role: Role, method: str) -> bool:
    """A writer (and an admin) may do everything to a merchant's data; a reader only reads."""
    return role is not Role.READER or method.upper() in READ_METHODS


def digest(key: str) -> bytes:
    """What is kept of a key: its SHA-256. A key is random (``new_key``, or an operator's in
    RESTOCK_API_KEYS), so its digest cannot be turned back into it."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key() -> str:
    """A new key: 256 random bits, URL-safe, after ``KEY_PREFIX``."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_name_problem(name: object, platform: bool) -> str | None:
    """What is wrong with ``name`` as the name of a key (a platform key when ``platform``),
    or None: 1 to 64 characters, printable, without spaces around; a merchant key's may not
    begin with ``platform:``, which marks a platform key's actor."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= KEY_NAME_LENGTH:
        return f"must be 1 to {KEY_NAME_LENGTH} characters, without spaces around"
    if name != name.strip():
        return f"must be 1 to {KEY_NAME_LENGTH} characters, without spaces around"
    if not name.isprintable():
        return "must be printable characters only"
    if not platform and name.startswith(PLATFORM_PREFIX):
        return f"may not begin with {PLATFORM_PREFIX} in a merchant key"
    return None


def _json(raw: str) -> list[object]:
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list of keys: {exc.msg} at character {exc.pos}") from None
    if not isinstance(items, list):
        raise ValueError("not a JSON list of keys")
    return items


def _named(position: int, item: object) -> tuple[bytes, Caller]:
    """One entry of the JSON form: ``{"name": 1-64 characters, "key": …, "role": …}``, and
    optionally ``"merchant"``: a merchant's id, or ``"*"`` for a platform key."""
    shape = 'must look like {"name": "yamada", "key": "…", "role": "writer"}'
    if not isinstance(item, dict) or not {"name", "key", "role"} <= set(item) <= _FIELDS:
        raise ValueError(f"entry {position} {shape}")
    name, key, role = item["name"], item["key"], item["role"]
    merchant = item.get("merchant", DEFAULT_MERCHANT)
    if merchant != PLATFORM and not is_merchant_id(merchant):
        raise ValueError(f'entry {position}: merchant must be a merchant\'s id or "*"')
    problem = key_name_problem(name, merchant == PLATFORM)
    if problem is not None:
        raise ValueError(f"entry {position}: name {problem}")
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"entry {position}: key must be a non-empty string")
    roles = Role.__members__.values() if merchant == PLATFORM else MERCHANT_ROLES
    if role not in roles:
        raise ValueError(f"entry {position}: role must be {' or '.join(roles)}")
    return digest(key.strip()), Caller(name, Role(role), merchant)


_FIELDS = {"name", "key", "role", "merchant"}
