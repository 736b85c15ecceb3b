"""Opaque keyset cursors: a kind and a position, base64url over JSON.

Clients pass them back untouched; a cursor of another kind or a forged one is a 422 that
names the query parameter. Every cursor of the API and of the console is read here, so a
position that no database could compare against never reaches a store.
"""

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from restock_service.errors import FieldProblem, InvalidRequest

Position = int | str | datetime


def encode(kind: str, *position: Position) -> str:
    """The cursor of ``kind`` at ``position``; a moment is kept as ISO-8601 with its offset."""
    values = [value.isoformat() if isinstance(value, datetime) else value for value in position]
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, kind: str, shape: tuple[type, ...], *, param: str) -> tuple[Any, ...]:
    """The position in ``token``, which must be a ``kind`` cursor of ``shape`` (``int``,
    ``str`` or ``datetime``: an aware moment, given back in UTC)."""
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        value = None
    if isinstance(value, list) and len(value) == len(shape) + 1 and value[0] == kind:
        position = tuple(_read(v, t) for v, t in zip(value[1:], shape, strict=True))
        if _ABSENT not in position:
            return position
    raise invalid(token, param=param)


def invalid(token: str, *, param: str) -> InvalidRequest:
    """The 422 for a cursor this service did not give out (or not for this list)."""
    return InvalidRequest(
        [
            FieldProblem(
                (param,),
                "is not a cursor this service gave out for this list",
                token,
                "cursor_invalid",
                location="query",
            )
        ]
    )


_ABSENT: Any = object()


def _read(value: object, kind: type) -> Any:
    """``value`` as a position of ``kind``, or ``_ABSENT`` when it cannot be one."""
    if kind is int:
        return value if type(value) is int and -(2**63) <= value < 2**63 else _ABSENT
    if type(value) is not str or "\x00" in value:
        return _ABSENT
    try:
        value.encode("utf-8")  # a lone surrogate decodes from JSON but cannot be sent on
    except UnicodeEncodeError:
        return _ABSENT
    if kind is str:
        return value
    if kind is datetime:
        return _moment(value)
    raise TypeError(f"no cursor position of type {kind.__name__}")


def _moment(text: str) -> Any:
    """An aware moment in UTC, inside the range that Python, SQLite and PostgreSQL all hold
    (years 1 to 9999 in UTC); ``_ABSENT`` for anything else."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return _ABSENT
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return _ABSENT
