"""The service's answers as plain dataclasses, written against ``openapi/openapi.json``.

Each answer model mirrors one schema of the OpenAPI document field for field (RestockBatch:
``RestockBatchOut``, OrderOutcome: ``RestockResultOut``, …), and each enum one of its
enums; fields marked :data:`CALL` are not in the body but about the call that got it.
``clients/python/tests/test_models_match_openapi.py`` fails when the two drift apart.
Bodies are parsed by hand, strictly: a missing field or a value of the wrong type raises
:class:`ShapeError`, which the client reports as ``RestockResponseError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Self, TypeVar

__all__ = [
    "CALL",
    "Code",
    "Counts",
    "FieldError",
    "Line",
    "Mall",
    "OrderCancel",
    "OrderOutcome",
    "Outcome",
    "Resolution",
    "RestockBatch",
    "RestockRecord",
    "RestockStatus",
    "ShapeError",
    "StockLevel",
]

CALL: Mapping[str, Any] = {"from": "call"}
"""Field metadata of the fields that are about the call, not in the answer's body."""

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


# --- enums (components.schemas: Mall, Code, Outcome, RestockStatus) ----------------------


class Mall(StrEnum):
    """The mall an order belongs to."""

    RAKUTEN = "rakuten"
    YAHOO = "yahoo"
    AMAZON = "amazon"


class Code(StrEnum):
    """What the service decided for one order of a cancel batch."""

    NOT_REQUESTED = "not_requested"
    MALL_CANCEL_FAILED = "mall_cancel_failed"
    ALREADY_RESTORED = "already_restored"
    PREVIOUSLY_FAILED = "previously_failed"
    NO_SYNC_HISTORY = "no_sync_history"
    MALL_MISMATCH = "mall_mismatch"
    PRODUCT_NOT_FOUND = "product_not_found"
    RESTORED = "restored"


class Outcome(StrEnum):
    """Which count of a batch an order's code falls in."""

    SUCCESS = "success"
    SKIP = "skip"
    FAIL = "fail"


class RestockStatus(StrEnum):
    """The state of an order's recorded restock."""

    RESTORED = "restored"
    FAILED = "failed"
    RESOLVED = "resolved"


# --- parsing -----------------------------------------------------------------------------


class ShapeError(ValueError):
    """A body that does not have its schema's shape; the message names where."""


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ShapeError(f"{where or 'the body'}: expected an object, got {_kind(value)}")
    return value


def _required(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise ShapeError(f"{_at(where, key)}: missing")
    return obj[key]


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ShapeError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ShapeError(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _datetime(value: object, where: str) -> datetime:
    text = _str(value, where)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ShapeError(f"{where}: not a date-time: {text!r}") from None


def _enum(cls: type[_E], value: object, where: str) -> _E:
    text = _str(value, where)
    try:
        return cls(text)
    except ValueError:
        raise ShapeError(f"{where}: {text!r} is not a {cls.__name__}") from None


def _list(value: object, where: str, item: Callable[[object, str], _T]) -> list[_T]:
    if not isinstance(value, list):
        raise ShapeError(f"{where}: expected an array, got {_kind(value)}")
    return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderCancel:
    """One order of a cancel batch (``RestockOrderIn``): its number and whether the mall
    cancel succeeded."""

    order_no: str
    mall_cancel_succeeded: bool
    mall_cancel_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The order as the request body carries it."""
        body: dict[str, Any] = {
            "order_no": self.order_no,
            "mall_cancel_succeeded": self.mall_cancel_succeeded,
        }
        if self.mall_cancel_message is not None:
            body["mall_cancel_message"] = self.mall_cancel_message
        return body


# --- answers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """A sku and a quantity (``LineOut``)."""

    sku: str
    quantity: int

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``LineOut``."""
        obj = _object(data, where)
        return cls(
            sku=_str(_required(obj, "sku", where), _at(where, "sku")),
            quantity=_int(_required(obj, "quantity", where), _at(where, "quantity")),
        )


@dataclass(frozen=True, slots=True)
class Counts:
    """How many orders of a batch ended in each outcome (``Counts``)."""

    success: int
    skip: int
    fail: int

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``Counts``."""
        obj = _object(data, where)
        return cls(
            success=_int(_required(obj, "success", where), _at(where, "success")),
            skip=_int(_required(obj, "skip", where), _at(where, "skip")),
            fail=_int(_required(obj, "fail", where), _at(where, "fail")),
        )


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What happened to one order (``RestockResultOut``)."""

    order_no: str
    code: Code
    outcome: Outcome
    message: str
    items: list[Line]
    missing_skus: list[str]

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``RestockResultOut``."""
        obj = _object(data, where)

        def get(key: str) -> object:
            return _required(obj, key, where)

        return cls(
            order_no=_str(get("order_no"), _at(where, "order_no")),
            code=_enum(Code, get("code"), _at(where, "code")),
            outcome=_enum(Outcome, get("outcome"), _at(where, "outcome")),
            message=_str(get("message"), _at(where, "message")),
            items=_list(get("items"), _at(where, "items"), Line.from_json),
            missing_skus=_list(get("missing_skus"), _at(where, "missing_skus"), _str),
        )


@dataclass(frozen=True, slots=True)
class RestockBatch:
    """The answer to a cancel batch (``RestockBatchOut``), as ``POST /restocks`` gave it the
    first time.

    ``idempotency_key`` is the key every attempt of the call carried; ``replayed`` is True
    when the answer is the service's replay of an earlier attempt's (whose answer was lost).
    """

    mall: Mall
    counts: Counts
    results: list[OrderOutcome]
    messages: list[str]
    request_id: str = field(default="", metadata=CALL)
    attempts: int = field(default=1, metadata=CALL)
    idempotency_key: str = field(default="", metadata=CALL)
    replayed: bool = field(default=False, metadata=CALL)

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``RestockBatchOut``; the call's fields keep their defaults."""
        obj = _object(data, where)

        def get(key: str) -> object:
            return _required(obj, key, where)

        return cls(
            mall=_enum(Mall, get("mall"), _at(where, "mall")),
            counts=Counts.from_json(get("counts"), _at(where, "counts")),
            results=_list(get("results"), _at(where, "results"), OrderOutcome.from_json),
            messages=_list(get("messages"), _at(where, "messages"), _str),
        )


@dataclass(frozen=True, slots=True)
class StockLevel:
    """A sku's stock after a manual adjustment (``StockOut``), as ``POST
    /stock/{sku}/adjustments`` gave it the first time (``idempotency_key`` and ``replayed``
    as on :class:`RestockBatch`)."""

    sku: str
    quantity: int
    updated_at: datetime
    request_id: str = field(default="", metadata=CALL)
    attempts: int = field(default=1, metadata=CALL)
    idempotency_key: str = field(default="", metadata=CALL)
    replayed: bool = field(default=False, metadata=CALL)

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``StockOut``; the call's fields keep their defaults."""
        obj = _object(data, where)
        return cls(
            sku=_str(_required(obj, "sku", where), _at(where, "sku")),
            quantity=_int(_required(obj, "quantity", where), _at(where, "quantity")),
            updated_at=_datetime(_required(obj, "updated_at", where), _at(where, "updated_at")),
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a failed restock was settled by hand (``Resolution``, contract v1.1); ``actor``
    is the name of the API key that resolved it (v1.2), None without keys."""

    note: str
    resolved_by: str
    resolved_at: datetime
    actor: str | None = None

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``Resolution``."""
        obj = _object(data, where)
        actor = obj.get("actor")
        return cls(
            note=_str(_required(obj, "note", where), _at(where, "note")),
            resolved_by=_str(_required(obj, "resolved_by", where), _at(where, "resolved_by")),
            resolved_at=_datetime(_required(obj, "resolved_at", where), _at(where, "resolved_at")),
            actor=None if actor is None else _str(actor, _at(where, "actor")),
        )


@dataclass(frozen=True, slots=True)
class RestockRecord:
    """The restock recorded for an order (``RestockRecordOut``), as ``GET
    /restocks/{order_no}`` gives it."""

    order_no: str
    mall: Mall
    status: RestockStatus
    code: Code
    message: str
    items: list[Line]
    missing_skus: list[str]
    requested_at: datetime
    completed_at: datetime
    repeat_requests: int
    resolution: Resolution | None = None

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``RestockRecordOut``."""
        obj = _object(data, where)

        def get(key: str) -> object:
            return _required(obj, key, where)

        resolution = obj.get("resolution")
        return cls(
            order_no=_str(get("order_no"), _at(where, "order_no")),
            mall=_enum(Mall, get("mall"), _at(where, "mall")),
            status=_enum(RestockStatus, get("status"), _at(where, "status")),
            code=_enum(Code, get("code"), _at(where, "code")),
            message=_str(get("message"), _at(where, "message")),
            items=_list(get("items"), _at(where, "items"), Line.from_json),
            missing_skus=_list(get("missing_skus"), _at(where, "missing_skus"), _str),
            requested_at=_datetime(get("requested_at"), _at(where, "requested_at")),
            completed_at=_datetime(get("completed_at"), _at(where, "completed_at")),
            repeat_requests=_int(get("repeat_requests"), _at(where, "repeat_requests")),
            resolution=(
                None
                if resolution is None
                else Resolution.from_json(resolution, _at(where, "resolution"))
            ),
        )


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field of a refused request (``ProblemField``, an entry of the problem
    document's ``errors``)."""

    field: str
    location: str
    message: str
    type: str
    input: Any = None

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self:
        """Parse a ``ProblemField``."""
        obj = _object(data, where)

        def get(key: str) -> str:
            return _str(_required(obj, key, where), _at(where, key))

        return cls(
            field=get("field"),
            location=get("location"),
            message=get("message"),
            type=get("type"),
            input=obj.get("input"),
        )
