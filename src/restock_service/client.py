"""An async HTTP client for the restock service, with retries that keep restocks exactly-once.

Restocks are idempotent per order: the service restores an order at most once and answers
``already_restored`` when the same order arrives again. That makes a cancel batch safe to
send again after a timeout, a dropped connection or a 503, and this client does so by
itself, with exponential backoff (honouring ``Retry-After``) and one ``X-Request-ID`` for
every attempt of a call.

Retrying has one visible side effect, which the client undoes. When an attempt ends
without an answer *after it may have reached the server* (a read timeout, a connection
reset), the server may have restored the orders and only the answer was lost. The retry
then finds those orders recorded and answers ``already_restored`` for them, although it
was this very call that restored them. Reported as such, the merchant would read
"skipped, already synced" for an order whose stock this action just put back. So when a
call had such an attempt, every ``already_restored`` of its final answer is reported as
``restored`` (``recovered=True``), with its lines read back from ``GET /restocks/{order_no}``
and the batch counts and messages recomputed by the service's own rules
(:func:`restock_service.rules.batch_messages`). See :meth:`RestockClient.restock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from restock_service.messages import MESSAGE, OUTCOME, Code, Mall, Outcome, RestockStatus
from restock_service.rules import Decision, Line, OrderResult, batch_messages
from restock_service.schemas import RestockBatchOut, RestockRecordOut, RestockResultOut

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
    "parse_retry_after",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
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
_M = TypeVar("_M", RestockBatchOut, RestockRecordOut)


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
    """What happened to one order (``recovered``: restored by a lost earlier attempt)."""

    order_no: str
    code: Code
    outcome: Outcome
    message: str
    items: list[Line]
    missing_skus: list[str]
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class RestockBatch:
    """The answer to a cancel batch, as ``POST /restocks`` gives it (after recovery)."""

    mall: Mall
    counts: Counts
    results: list[OrderOutcome]
    messages: list[str]
    request_id: str = ""
    attempts: int = 1


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem: dict[str, Any] | None = dict(problem) if problem is not None else None
        self.errors: list[FieldError] = _field_errors(problem)
        self.request_id = request_id
        self.attempts = attempts

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
    """The service did not answer usefully within ``max_attempts`` (503s or transport errors).

    ``retry_after`` is the last delay the service asked for, if any. ``outcome_unknown``
    is True when an attempt may have reached the server and been applied; sending the same
    batch again is safe either way.
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


class RestockClient:
    """Async client for the restock service's ``/restocks`` calls, with safe retries.

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
    ) -> RestockBatch:
        """Send a cancel batch (``POST /restocks``) and return each order's outcome.

        Retries timeouts, transport errors and 503s; raises :class:`RestockRequestError`
        (4xx, no retry), :class:`RestockUnavailable` (attempts exhausted) or
        :class:`RestockResponseError`.

        Recovery of lost answers: if an attempt of this call ended without an answer after
        the request may have reached the server (read/write timeout, read error, connection
        closed mid-answer), that attempt may have restored orders. A later attempt then gets
        ``already_restored`` for them, and the client reports each such order as
        ``restored`` with ``recovered=True``: this call is what restored it (the service's
        record of the order is the proof that it is restored; the only other possibility,
        that the order was restored before this call began and the lost attempt never
        reached the server, cannot be told apart from the answer and is the rare one).
        Its lines are read with ``GET /restocks/{order_no}``, so the result looks like a
        first-time ``restored``; if that read fails the order keeps ``items == []`` (a
        restored order always has lines, so an empty list means "not known"). Counts and
        messages are then recomputed with the service's own rules. Failures that happen
        before the request is sent (connect errors, pool timeouts) and the service's 503
        (which changes nothing) do not trigger this; without such an attempt an
        ``already_restored`` answer is a genuine repeat and is reported as it is.
        """
        rid = request_id or uuid.uuid4().hex
        body = {
            "mall": str(mall),
            "restore_stock": restore_stock,
            "orders": [o.to_json() if isinstance(o, OrderCancel) else dict(o) for o in orders],
        }
        answer = await self._call("POST", "/restocks", rid, json=body)
        if answer.response.status_code != 200:
            raise _refusal(answer)
        batch = _parse(RestockBatchOut, answer, rid)
        result = RestockBatch(
            mall=batch.mall,
            counts=Counts(
                success=batch.counts.success, skip=batch.counts.skip, fail=batch.counts.fail
            ),
            results=[_outcome(r) for r in batch.results],
            messages=list(batch.messages),
            request_id=rid,
            attempts=answer.attempts,
        )
        if answer.outcome_unknown:
            result = await self._recover(result)
        return result

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

    async def _recover(self, batch: RestockBatch) -> RestockBatch:
        """Report the ``already_restored`` orders of a call with a lost answer as restored."""
        if not any(r.code is Code.ALREADY_RESTORED for r in batch.results):
            return batch
        results = []
        for r in batch.results:
            if r.code is Code.ALREADY_RESTORED:
                items = await self._restored_lines(r.order_no, batch.request_id)
                log.info(
                    "order %s: already_restored after a lost answer, reported as restored",
                    r.order_no,
                )
                r = replace(
                    r,
                    code=Code.RESTORED,
                    outcome=OUTCOME[Code.RESTORED],
                    message=MESSAGE[Code.RESTORED],
                    items=items,
                    missing_skus=[],
                    recovered=True,
                )
            results.append(r)
        decided = [
            OrderResult(r.order_no, Decision(r.code, tuple(r.items), tuple(r.missing_skus)))
            for r in results
        ]
        codes = {r.code for r in results}
        messages = batch_messages(
            restore_stock=codes != {Code.NOT_REQUESTED},
            any_cancel_succeeded=bool(codes - {Code.NOT_REQUESTED, Code.MALL_CANCEL_FAILED}),
            results=decided,
        )
        return replace(
            batch,
            counts=Counts(
                success=sum(r.outcome is Outcome.SUCCESS for r in results),
                skip=sum(r.outcome is Outcome.SKIP for r in results),
                fail=sum(r.outcome is Outcome.FAIL for r in results),
            ),
            results=results,
            messages=list(messages),
        )

    async def _restored_lines(self, order_no: str, request_id: str) -> list[Line]:
        """The restored lines of ``order_no`` from its record; [] when they cannot be read."""
        try:
            record = await self.get_restock(order_no, request_id=request_id)
        except RestockError as exc:
            log.warning("order %s: could not read its restored lines: %s", order_no, exc)
            return []
        if record is None or record.status is not RestockStatus.RESTORED:
            log.warning("order %s: no restored record to read its lines from", order_no)
            return []
        return list(record.items)

    async def _call(self, method: str, path: str, request_id: str, json: Any = None) -> _Answer:
        """Send one call, retrying transport errors, timeouts and 503s with backoff."""
        outcome_unknown = False
        retry_after: float | None = None
        last_response: httpx.Response | None = None
        last_error: httpx.TransportError | None = None
        headers = {REQUEST_ID_HEADER: request_id}
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
                    f"{method} {path} could not be sent: {exc!r}", request_id=request_id
                ) from exc
            else:
                if response.status_code != 503:
                    return _Answer(response, attempt, outcome_unknown)
                last_error, last_response = None, response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                log.warning(
                    "%s %s [%s] attempt %d/%d: 503, Retry-After %s",
                    method, path, request_id, attempt, self._max_attempts, retry_after,
                )  # fmt: skip
            if attempt == self._max_attempts:
                break
            if retry_after is not None and retry_after > self._max_retry_after:
                break
            await self._sleep(retry_after if retry_after is not None else self._backoff(attempt))
        raise RestockUnavailable(
            f"{method} {path} failed after {attempt} attempt(s): "
            + (f"{last_error!r}" if last_error is not None else "503 Service Unavailable"),
            status=last_response.status_code if last_response is not None else None,
            problem=_problem(last_response) if last_response is not None else None,
            request_id=request_id,
            attempts=attempt,
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
    )
