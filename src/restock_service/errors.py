"""Domain errors. One handler in the API layer maps each to its HTTP status."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


class DomainError(Exception):
    """Base of the errors a service raises on purpose."""

    status = 400
    headers: ClassVar[Mapping[str, str]] = {}  # sent with the answer (Retry-After, say)

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class Forbidden(DomainError):
    status = 403


class Unauthenticated(DomainError):
    """Keys are needed, and the request has none that is valid."""

    status = 401
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}

    def __init__(self) -> None:
        super().__init__("send a valid key as `Authorization: Bearer <key>`")


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One offending field: where it is, what was wrong, and the value that was sent."""

    loc: tuple[str | int, ...]
    message: str
    input: Any = None
    type: str = "value_error"
    location: str = "body"


class InvalidRequest(DomainError):
    """A request that parsed but breaks a rule that needs more than one field (or the DB)."""

    status = 422

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{field_path(p.loc)}: {p.message}" for p in problems))
        self.problems = problems


def field_path(loc: tuple[str | int, ...]) -> str:
    """``("orders", 1, "order_no")`` → ``orders[1].order_no``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
