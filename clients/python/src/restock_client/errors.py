"""The errors the client raises, each carrying what the service answered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from restock_client.models import FieldError, ShapeError

__all__ = [
    "RestockAuthError",
    "RestockError",
    "RestockRequestError",
    "RestockResponseError",
    "RestockUnavailable",
]


class RestockError(Exception):
    """Base of every error this client raises; carries what the service answered.

    ``problem`` is the answer's problem document (``Problem`` in the OpenAPI document) as
    it came, ``errors`` its offending fields, parsed.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem: dict[str, Any] | None = dict(problem) if problem is not None else None
        self.errors: list[FieldError] = _field_errors(problem)
        self.request_id = request_id
        self.attempts = attempts
        self.idempotency_key = idempotency_key

    @property
    def detail(self) -> str | None:
        """The problem document's ``detail``, when the answer had one."""
        detail = (self.problem or {}).get("detail")
        return detail if isinstance(detail, str) else None


class RestockRequestError(RestockError):
    """A 4xx answer: the request was refused and nothing changed; sending it again won't help."""


class RestockAuthError(RestockRequestError):
    """A 401 (no valid key) or 403 (a reader key on a call that writes)."""


class RestockUnavailable(RestockError):
    """The service did not answer usefully within ``max_attempts`` (503s, 409s "still in
    flight" or transport errors), or asked to wait longer than ``max_retry_after``.

    ``retry_after`` is the last delay the service asked for, if any. ``outcome_unknown``
    is True when an attempt may have reached the server and been applied, its answer lost.
    Sending the call again with ``idempotency_key=err.idempotency_key`` is safe either way:
    it gets the first answer, if there was one, and takes effect otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class RestockResponseError(RestockError):
    """An answer outside the contract: an unexpected status or a body of the wrong shape."""


def _field_errors(problem: Mapping[str, Any] | None) -> list[FieldError]:
    """The problem's ``errors`` that have their schema's shape (the others are left out:
    a refusal is reported whatever its details look like)."""
    raw = (problem or {}).get("errors")
    if not isinstance(raw, list):
        return []
    errors = []
    for i, entry in enumerate(raw):
        try:
            errors.append(FieldError.from_json(entry, f"errors[{i}]"))
        except ShapeError:
            continue
    return errors
