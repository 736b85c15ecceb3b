"""An async HTTP client for the restock service, with retries that take effect once.

Every write this client sends carries an ``Idempotency-Key`` (contract v1.2): one fresh key
per logical call, the same key on each of its attempts, next to one ``X-Request-ID``. The
service stores a write's answer with its effect and answers a retry with the same key by
replaying that first answer, byte for byte (``Idempotent-Replayed: true``). That makes a
call safe to send again after a timeout, a dropped connection or a 503, and this client does
so by itself, with exponential backoff (honouring ``Retry-After``).

So when an attempt restored the orders and only its answer was lost, the retry gets that
first answer back, ``restored`` with its lines, and the client returns it as it is
(``replayed=True``): there is nothing to guess and nothing to relabel. While the first
attempt is still being processed, the service answers the retry 409 with ``Retry-After``;
the client waits and asks again. See :meth:`RestockClient.restock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from restock_service.messages import Code, Mall, Outcome, RestockStatus
from restock_service.rules import Line
from restock_service.schemas import RestockBatchOut, RestockRecordOut, RestockResultOut, StockOut

__all__ = [
    "Counts",
    "FieldError",
    "Line",
    "OrderCancel",
    "OrderOutcome",
    "Resolution",
    "RestockAuthError",
    "RestockBatch",
    "RestockClient",
    "RestockError",
    "RestockRecord",
    "RestockRequestError",
    "RestockResponseError",
    "RestockUnavailable",
    "StockLevel",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
DEFAULT_TIMEOUT_S = 10.0

# Failures after which the request may have reached the server (and been applied): the
# outcome of that attempt is unknown. The failures below it happen before a byte is sent.
RETRYABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)

Sleep = Callable[[float], Awaitable[object]]
_M = TypeVar("_M", RestockBatchOut, RestockRecordOut, StockOut)


# --- requests and answers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderCancel:
    """One order of a cancel batch: its number and whether the mall cancel succeeded."""

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


@dataclass(frozen=True, slots=True)
class Counts:
    """How many orders of a batch ended in each outcome."""

    success: int
    skip: int
    fail: int


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What happened to one order."""

    order_no: str
    code: Code
    outcome: Outcome
    message: str
    items: list[Line]
    missing_skus: list[str]


@dataclass(frozen=True, slots=True)
class RestockBatch:
    """The answer to a cancel batch, as ``POST /restocks`` gave it the first time.

    ``idempotency_key`` is the key every attempt of the call carried; ``replayed`` is True
    when the answer is the service's replay of an earlier attempt's (whose answer was lost).
    """

    mall: Mall
    counts: Counts
    results: list[OrderOutcome]
    messages: list[str]
    request_id: str = ""
    attempts: int = 1
    idempotency_key: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StockLevel:
    """A sku's stock after a manual adjustment, as ``POST /stock/{sku}/adjustments`` gave it
    the first time (``idempotency_key`` and ``replayed`` as on :class:`RestockBatch`)."""

    sku: str
    quantity: int
    updated_at: datetime
    request_id: str = ""
    attempts: int = 1
    idempotency_key: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a failed restock was settled by hand (contract v1.1)."""

    note: str
    resolved_by: str
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class RestockRecord:
    """The restock recorded for an order, as ``GET /restocks/{order_no}`` gives it."""

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


# --- errors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field of a rejected request (an entry of the problem's ``errors``)."""

    field: str
    location: str
    message: str
    type: str
    input: Any = None


class RestockError(Exception):
    """Base of every error this client raises; carries what the service answered."""

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
    flight" or transport errors).

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


# --- the client --------------------------------------------------------------------------


@dataclass(slots=True)
class _Answer:
    response: httpx.Response
    attempts: int
    outcome_unknown: bool = field(default=False)

    @property
    def replayed(self) -> bool:
        """Whether the service replayed a stored answer (to an earlier attempt's key)."""
        value: str = self.response.headers.get(REPLAYED_HEADER, "")
        return value.strip().lower() == "true"


class RestockClient:
    """Async client for the restock service's ``/restocks`` and adjustment calls, with safe
    retries.

    ``timeout`` applies per attempt. A call makes at most ``max_attempts`` attempts; between
    them it waits ``Retry-After`` when the service sent one (up to ``max_retry_after``
    seconds; a longer one ends the call with :class:`RestockUnavailable` at once), otherwise
    ``backoff_base * 2**(n-1)`` capped at ``backoff_cap``, reduced by a random part of up
    to ``jitter`` of itself (with jitter ≤ 0.5 they never shrink until they reach the cap).
    """

    def __init__(
        self,
        base_url: str | httpx.URL,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT_S,
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        jitter: float = 0.5,
        max_retry_after: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Configure the client; it opens connections lazily, close it with ``aclose()``."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < backoff_base <= backoff_cap:
            raise ValueError("need 0 < backoff_base <= backoff_cap")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if max_retry_after < 0:
            raise ValueError("max_retry_after must not be negative")
        headers = {"Accept": "application/json, application/problem+json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._jitter = jitter
        self._max_retry_after = max_retry_after
        self._sleep = sleep

    async def __aenter__(self) -> Self:
        """Enter ``async with``; the client is closed on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connections."""
        await self._http.aclose()

    async def restock(
        self,
        mall: Mall | str,
        orders: Sequence[OrderCancel | Mapping[str, Any]],
        restore_stock: bool = True,
        request_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> RestockBatch:
        """Send a cancel batch (``POST /restocks``) and return each order's outcome.

        Retries timeouts, transport errors, 503s and "still in flight" 409s; raises
        :class:`RestockRequestError` (4xx, no retry), :class:`RestockUnavailable` (attempts
        exhausted) or :class:`RestockResponseError`.

        Every attempt carries the same ``Idempotency-Key``: ``idempotency_key`` when given
        (to resend a call that ended in :class:`RestockUnavailable`), otherwise a fresh one
        for this call. Retrying is therefore safe, and exact: if an attempt restored orders
        and only its answer was lost (a read timeout, a dropped connection), the service
        answers the retry with that first answer, ``restored`` with its lines, and the
        result is that answer as it is, with ``replayed=True``. Without the key the retry
        would have read ``already_restored``, the answer to a repeat, for orders this very
        call restored. An ``already_restored`` in the result is therefore a genuine repeat:
        the order was restored by another call. A key names one request: sent again with
        another batch, it is refused (422).
        """
        key = _new_key() if idempotency_key is None else idempotency_key
        rid = request_id or uuid.uuid4().hex
        body = {
            "mall": str(mall),
            "restore_stock": restore_stock,
            "orders": [o.to_json() if isinstance(o, OrderCancel) else dict(o) for o in orders],
        }
        answer = await self._call("POST", "/restocks", rid, json=body, idempotency_key=key)
        if answer.response.status_code != 200:
            raise _refusal(answer)
        batch = _parse(RestockBatchOut, answer, rid)
        return RestockBatch(
            mall=batch.mall,
            counts=Counts(
                success=batch.counts.success, skip=batch.counts.skip, fail=batch.counts.fail
            ),
            results=[_outcome(r) for r in batch.results],
            messages=list(batch.messages),
            request_id=rid,
            attempts=answer.attempts,
            idempotency_key=key,
            replayed=answer.replayed,
        )

    async def adjust(
        self,
        sku: str,
        delta: int,
        reason: str,
        order_no: str | None = None,
        *,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> StockLevel:
        """Adjust a sku's stock by hand (``POST /stock/{sku}/adjustments``): the manual
        adjustment the merchant is told to make. Returns the stock after it.

        An adjustment is not idempotent by itself (each one moves stock), so it is retried
        only under its ``Idempotency-Key``, as :meth:`restock` is: a retry after a lost
        answer gets the first answer back (``replayed=True``) and the stock moves once. Two
        calls are two adjustments, each with its own fresh key, unless the caller passes
        the same ``idempotency_key`` to both. An unknown sku (404) or a refused body (422)
        raises :class:`RestockRequestError`.
        """
        key = _new_key() if idempotency_key is None else idempotency_key
        rid = request_id or uuid.uuid4().hex
        body: dict[str, Any] = {"delta": delta, "reason": reason}
        if order_no is not None:
            body["order_no"] = order_no
        path = f"/stock/{quote(sku, safe='')}/adjustments"
        answer = await self._call("POST", path, rid, json=body, idempotency_key=key)
        if answer.response.status_code != 200:
            raise _refusal(answer)
        stock = _parse(StockOut, answer, rid)
        return StockLevel(
            sku=stock.sku,
            quantity=stock.quantity,
            updated_at=stock.updated_at,
            request_id=rid,
            attempts=answer.attempts,
            idempotency_key=key,
            replayed=answer.replayed,
        )

    async def get_restock(
        self, order_no: str, request_id: str | None = None
    ) -> RestockRecord | None:
        """Read the restock recorded for ``order_no`` (``GET /restocks/{order_no}``), or None."""
        rid = request_id or uuid.uuid4().hex
        answer = await self._call("GET", f"/restocks/{quote(order_no, safe='')}", rid)
        status = answer.response.status_code
        if status == 404:
            return None
        if status != 200:
            raise _refusal(answer)
        record = _parse(RestockRecordOut, answer, rid)
        return RestockRecord(
            order_no=record.order_no,
            mall=record.mall,
            status=record.status,
            code=record.code,
            message=record.message,
            items=[Line(sku=i.sku, quantity=i.quantity) for i in record.items],
            missing_skus=list(record.missing_skus),
            requested_at=record.requested_at,
            completed_at=record.completed_at,
            repeat_requests=record.repeat_requests,
            resolution=_resolution(answer.response),
        )

    # --- internals -----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        request_id: str,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> _Answer:
        """Send one call, retrying transport errors, timeouts and 503s with backoff.

        A keyed call (a write) sends its key on every attempt, and also retries a 409 that
        carries ``Retry-After``: the service's "a request with this key is still being
        processed", typically the very attempt whose answer this call lost. Any other 409
        is a refusal, and so is every 409 of an unkeyed call.
        """
        outcome_unknown = False
        retry_after: float | None = None
        last_response: httpx.Response | None = None
        last_error: httpx.TransportError | None = None
        headers = {REQUEST_ID_HEADER: request_id}
        if idempotency_key is not None:
            headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http.request(method, path, json=json, headers=headers)
            except RETRYABLE_ERRORS as exc:
                last_error, last_response, retry_after = exc, None, None
                if not isinstance(exc, NOT_SENT_ERRORS):
                    outcome_unknown = True
                log.warning(
                    "%s %s [%s] attempt %d/%d failed: %r",
                    method, path, request_id, attempt, self._max_attempts, exc,
                )  # fmt: skip
            except httpx.TransportError as exc:  # a bad URL or a broken request: not transient
                raise RestockError(
                    f"{method} {path} could not be sent: {exc!r}",
                    request_id=request_id,
                    idempotency_key=idempotency_key,
                ) from exc
            else:
                if not _retryable(response, keyed=idempotency_key is not None):
                    return _Answer(response, attempt, outcome_unknown)
                last_error, last_response = None, response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                log.warning(
                    "%s %s [%s] attempt %d/%d: %d, Retry-After %s",
                    method, path, request_id, attempt, self._max_attempts,
                    response.status_code, retry_after,
                )  # fmt: skip
            if attempt == self._max_attempts:
                break
            if retry_after is not None and retry_after > self._max_retry_after:
                break
            await self._sleep(retry_after if retry_after is not None else self._backoff(attempt))
        if last_response is not None:
            why = f"{last_response.status_code} {last_response.reason_phrase}"
        else:
            why = repr(last_error)
        raise RestockUnavailable(
            f"{method} {path} failed after {attempt} attempt(s): {why}",
            status=last_response.status_code if last_response is not None else None,
            problem=_problem(last_response) if last_response is not None else None,
            request_id=request_id,
            attempts=attempt,
            idempotency_key=idempotency_key,
            retry_after=retry_after,
            outcome_unknown=outcome_unknown,
        ) from last_error

    def _backoff(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based) when no Retry-After was sent."""
        delay = min(self._backoff_cap, self._backoff_base * 2.0 ** min(attempt - 1, 62))
        return delay * (1 - self._jitter * random.random())


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _new_key() -> str:
    """A fresh idempotency key: one per logical call, 32 hex digits."""
    return uuid.uuid4().hex


def _retryable(response: httpx.Response, *, keyed: bool) -> bool:
    """Whether an answer asks to be sent again: a 503 (nothing changed), or, for a keyed
    call, the 409 with ``Retry-After`` that says its key's first request is in flight."""
    if response.status_code == 503:
        return True
    return keyed and response.status_code == 409 and "Retry-After" in response.headers


def _outcome(r: RestockResultOut) -> OrderOutcome:
    return OrderOutcome(
        order_no=r.order_no,
        code=r.code,
        outcome=r.outcome,
        message=r.message,
        items=[Line(sku=i.sku, quantity=i.quantity) for i in r.items],
        missing_skus=list(r.missing_skus),
    )


def _parse(model: type[_M], answer: _Answer, request_id: str) -> _M:
    try:
        return model.model_validate_json(answer.response.content)
    except ValidationError as exc:
        raise RestockResponseError(
            f"the answer is not a {model.__name__}: {exc}",
            status=answer.response.status_code,
            request_id=request_id,
            attempts=answer.attempts,
            idempotency_key=answer.response.request.headers.get(IDEMPOTENCY_KEY_HEADER),
        ) from exc


def _resolution(response: httpx.Response) -> Resolution | None:
    try:
        raw = response.json().get("resolution")
        if not isinstance(raw, dict):
            return None
        return Resolution(
            note=str(raw["note"]),
            resolved_by=str(raw["resolved_by"]),
            resolved_at=datetime.fromisoformat(str(raw["resolved_at"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The response's JSON object (a problem document, if the service answered), else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _field_errors(problem: Mapping[str, Any] | None) -> list[FieldError]:
    raw = (problem or {}).get("errors")
    if not isinstance(raw, list):
        return []
    return [
        FieldError(
            field=str(e.get("field", "")),
            location=str(e.get("location", "")),
            message=str(e.get("message", "")),
            type=str(e.get("type", "")),
            input=e.get("input"),
        )
        for e in raw
        if isinstance(e, dict)
    ]


def _refusal(answer: _Answer) -> RestockError:
    """The error for a non-success answer that is not retried."""
    response = answer.response
    status = response.status_code
    problem = _problem(response)
    request = response.request
    detail = (problem or {}).get("detail") or response.reason_phrase
    message = f"{request.method} {request.url.path} answered {status}: {detail}"
    cls: type[RestockError]
    if status in (401, 403):
        cls = RestockAuthError
    elif 400 <= status < 500:
        cls = RestockRequestError
    else:
        cls = RestockResponseError
    return cls(
        message,
        status=status,
        problem=problem,
        request_id=response.request.headers.get(REQUEST_ID_HEADER),
        attempts=answer.attempts,
        idempotency_key=response.request.headers.get(IDEMPOTENCY_KEY_HEADER),
    )
