"""Opaque keyset cursors: a kind and a position, base64url over JSON.

Clients pass them back untouched; a cursor of another kind or a forged one is a 422 that
names the query parameter.
"""

import base64
import binascii
import json
from typing import Any

from restock_service.errors import FieldProblem, InvalidRequest


def encode(kind: str, *position: int | str) -> str:
    raw = json.dumps([kind, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str, kind: str, shape: tuple[type, ...], *, param: str) -> tuple[Any, ...]:
    """The position in ``token``, which must be a ``kind`` cursor of ``shape``."""
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        value = None
    if (
        isinstance(value, list)
        and len(value) == len(shape) + 1
        and value[0] == kind
        and all(_fits(v, t) for v, t in zip(value[1:], shape, strict=True))
    ):
        return tuple(value[1:])
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


def _fits(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int and -(2**63) <= value < 2**63
    if type(value) is not kind or "\x00" in str(value):
        return False
    try:
        str(value).encode("utf-8")  # a lone surrogate decodes from JSON but cannot be sent on
    except UnicodeEncodeError:
        return False
    return True
