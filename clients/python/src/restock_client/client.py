"""An async HTTP client for the restock service, with retries that take effect once.

Every write this client sends carries an ``Idempotency-Key`` (contract v1.2): one fresh key
per logical call, the same key on each of its attempts, next to one ``X-Request-ID``. The
service stores a write's answer with its effect and answers a retry with the same key by
replaying that first answer, byte for byte (``Idempotent-Replayed: true``). That makes a
call safe to send again after a timeout, a dropped connection or a 503, and this client does
so by itself, with exponential backoff (honouring ``Retry-After``); tenacity runs the
attempts.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from restock_client.errors import (
    RestockAuthError,
    RestockError,
    RestockRequestError,
    RestockResponseError,
    RestockUnavailable,
)
from restock_client.models import (
    Mall,
    OrderCancel,
    RestockBatch,
    RestockRecord,
    StockLevel,
)

__all__ = ["RestockClient", "parse_retry_after"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MERCHANT_HEADER = "Merchant-Id"
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


class _FromJson(Protocol):
    """An answer model: it parses its schema's JSON body."""

    @classmethod
    def from_json(cls, data: object, where: str = "") -> Self: ...


_M = TypeVar("_M", bound=_FromJson)
_W = TypeVar("_W", RestockBatch, StockLevel)  # the answers of the keyed writes


@dataclass(frozen=True, slots=True)
class _Answer:
    response: httpx.Response
    attempts: int

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
    ``sleep`` is how it waits (``asyncio.sleep``; tests pass one that records the delays).
    """

    def __init__(
        self,
        base_url: str | httpx.URL,
        *,
        api_key: str | None = None,
        merchant: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT_S,
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        jitter: float = 0.5,
        max_retry_after: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Configure the client; it opens connections lazily, close it with ``aclose()``.

        ``merchant`` is the merchant every call is for (contract v1.3), sent as
        ``Merchant-Id``: required with a platform key; a merchant key's calls are its
        merchant's without it."""
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
        if merchant is not None:
            headers[MERCHANT_HEADER] = merchant
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._max_attempts = max_attempts
        self._wait = _WaitRetryAfterOrBackoff(backoff_base, backoff_cap, jitter)
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
        body = restock_body(mall, orders, restore_stock)
        return await self._write(RestockBatch, "/restocks", body, idempotency_key, request_id)

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
        path = f"/stock/{quote(sku, safe='')}/adjustments"
        body = adjustment_body(delta, reason, order_no)
        return await self._write(StockLevel, path, body, idempotency_key, request_id)

    async def _write(
        self,
        model: type[_W],
        path: str,
        body: dict[str, Any],
        idempotency_key: str | None,
        request_id: str | None,
    ) -> _W:
        """POST ``body`` under one key for every attempt; its 200 answer as ``model``."""
        key = _new_key() if idempotency_key is None else idempotency_key
        rid = request_id or uuid.uuid4().hex
        answer = await self._call("POST", path, rid, json=body, idempotency_key=key)
        if answer.response.status_code != 200:
            raise _refusal(answer)
        return replace(
            _parse(model, answer, rid),
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
        return _parse(RestockRecord, answer, rid)

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
        is a refusal, and so is every 409 of an unkeyed call. tenacity runs the attempts;
        the waits and the early stop on a long ``Retry-After`` are the two classes below.
        """
        keyed = idempotency_key is not None
        headers = {REQUEST_ID_HEADER: request_id}
        if idempotency_key is not None:
            headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
        attempts = 0
        outcome_unknown = False

        async def attempt() -> httpx.Response:
            nonlocal attempts, outcome_unknown
            attempts += 1
            try:
                response = await self._http.request(method, path, json=json, headers=headers)
            except RETRYABLE_ERRORS as exc:
                if not isinstance(exc, NOT_SENT_ERRORS):
                    outcome_unknown = True
                log.warning(
                    "%s %s [%s] attempt %d/%d failed: %r",
                    method, path, request_id, attempts, self._max_attempts, exc,
                )  # fmt: skip
                raise
            except httpx.TransportError as exc:  # a bad URL or a broken request: not transient
                raise RestockError(
                    f"{method} {path} could not be sent: {exc!r}",
                    request_id=request_id,
                    idempotency_key=idempotency_key,
                ) from exc
            if _retryable(response, keyed=keyed):
                log.warning(
                    "%s %s [%s] attempt %d/%d: %d, Retry-After %s",
                    method, path, request_id, attempts, self._max_attempts,
                    response.status_code, response.headers.get("Retry-After"),
                )  # fmt: skip
            return response

        async def sleep(seconds: float) -> None:
            await self._sleep(seconds)

        retrying = AsyncRetrying(
            retry=(
                retry_if_exception_type(RETRYABLE_ERRORS)
                | retry_if_result(lambda response: _retryable(response, keyed=keyed))
            ),
            stop=stop_after_attempt(self._max_attempts)
            | _StopOnLongRetryAfter(self._max_retry_after),
            wait=self._wait,
            sleep=sleep,
        )
        try:
            response: httpx.Response = await retrying(attempt)
        except RetryError as exc:
            raise _unavailable(
                exc, method, path, request_id, attempts, idempotency_key, outcome_unknown
            ) from exc.last_attempt.exception()
        return _Answer(response, attempts)


class _WaitRetryAfterOrBackoff(wait_base):
    """The delay after a failed attempt: the answer's ``Retry-After`` when it has one,
    otherwise exponential backoff, capped, less a random part of up to ``jitter``."""

    def __init__(self, base: float, cap: float, jitter: float) -> None:
        self._backoff = wait_exponential(multiplier=base, max=cap)
        self._jitter = jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = _asked_retry_after(retry_state)
        if asked is not None:
            return asked
        return self._backoff(retry_state) * (1 - self._jitter * random.random())


class _StopOnLongRetryAfter(stop_base):
    """Give up at once when the service asks to wait longer than the client will."""

    def __init__(self, limit: float) -> None:
        self._limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        asked = _asked_retry_after(retry_state)
        return asked is not None and asked > self._limit


def _asked_retry_after(retry_state: RetryCallState) -> float | None:
    """The ``Retry-After`` of the attempt's answer, if it was answered with one."""
    outcome = retry_state.outcome
    if outcome is None or outcome.failed:
        return None
    response: httpx.Response = outcome.result()
    return parse_retry_after(response.headers.get("Retry-After"))


def _unavailable(
    exc: RetryError,
    method: str,
    path: str,
    request_id: str,
    attempts: int,
    idempotency_key: str | None,
    outcome_unknown: bool,
) -> RestockUnavailable:
    """The error for a call whose attempts ran out, from its last attempt."""
    last = exc.last_attempt
    call: dict[str, Any] = {
        "request_id": request_id,
        "attempts": attempts,
        "idempotency_key": idempotency_key,
        "outcome_unknown": outcome_unknown,
    }
    failed = f"{method} {path} failed after {attempts} attempt(s)"
    if last.failed:
        return RestockUnavailable(f"{failed}: {last.exception()!r}", **call)
    response: httpx.Response = last.result()
    return RestockUnavailable(
        f"{failed}: {response.status_code} {response.reason_phrase}",
        status=response.status_code,
        problem=_problem(response),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        **call,
    )


def restock_body(
    mall: Mall | str, orders: Sequence[OrderCancel | Mapping[str, Any]], restore_stock: bool
) -> dict[str, Any]:
    """The body of ``POST /restocks`` (``RestockRequest``)."""
    return {
        "mall": str(mall),
        "restore_stock": restore_stock,
        "orders": [o.to_json() if isinstance(o, OrderCancel) else dict(o) for o in orders],
    }


def adjustment_body(delta: int, reason: str, order_no: str | None) -> dict[str, Any]:
    """The body of ``POST /stock/{sku}/adjustments`` (``AdjustmentIn``)."""
    body: dict[str, Any] = {"delta": delta, "reason": reason}
    if order_no is not None:
        body["order_no"] = order_no
    return body


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
    """Whether an answer asks to be sent again: a 503, or a 429 with ``Retry-After`` (too
    many of the merchant's requests at once), neither of which changed anything; or, for a
    keyed call, the 409 with ``Retry-After`` that says its key's first request is in
    flight."""
    if response.status_code == 503 or (
        response.status_code == 429 and "Retry-After" in response.headers
    ):
        return True
    return keyed and response.status_code == 409 and "Retry-After" in response.headers


def _parse(model: type[_M], answer: _Answer, request_id: str) -> _M:
    """The answer's body as ``model``, or :class:`RestockResponseError`."""
    try:
        return model.from_json(answer.response.json())
    except ValueError as exc:  # a ShapeError, or a body that is not JSON
        raise RestockResponseError(
            f"the answer is not a {model.__name__}: {exc}",
            status=answer.response.status_code,
            request_id=request_id,
            attempts=answer.attempts,
            idempotency_key=answer.response.request.headers.get(IDEMPOTENCY_KEY_HEADER),
        ) from exc


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The response's JSON object (a problem document, if the service answered), else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


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
        request_id=request.headers.get(REQUEST_ID_HEADER),
        attempts=answer.attempts,
        idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER),
    )
