"""RestockClient against a mocked service (respx): typed answers, retries, idempotency keys.

No server runs and nothing of it is imported: the bodies have the OpenAPI document's shapes,
with stand-in texts (the client passes the service's texts through untouched; the real ones
meet the client in tests/test_client_keys.py and tests/test_client_against_app.py).
"""

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from restock_client import (
    Code,
    Line,
    Mall,
    OrderCancel,
    Outcome,
    RestockAuthError,
    RestockBatch,
    RestockClient,
    RestockError,
    RestockRecord,
    RestockRequestError,
    RestockResponseError,
    RestockStatus,
    RestockUnavailable,
    StockLevel,
    parse_retry_after,
)

BASE = "http://restock.test"
ORDER_A = "354396-20260525-0036329794"
ORDER_B = "354396-20260525-0036329795"
ORDER_C = "354396-20260525-0036329796"
LINES = [{"sku": "TSHIRT-RED-M", "quantity": 2}, {"sku": "CAP-01", "quantity": 1}]
PROBLEM_JSON = {"content-type": "application/problem+json"}
REPLAYED = {"Idempotent-Replayed": "true"}
KEY = "Idempotency-Key"

# The outcome the service gives each code these tests use, and stand-ins for its texts.
OUTCOME = {
    Code.RESTORED: Outcome.SUCCESS,
    Code.ALREADY_RESTORED: Outcome.SKIP,
    Code.MALL_CANCEL_FAILED: Outcome.SKIP,
    Code.PRODUCT_NOT_FOUND: Outcome.FAIL,
}
MESSAGE = {code: f"<the service's text for {code}>" for code in Code}
FAILURES_HEADER = "<the header of the failures>"


def restored_count_line(n: int) -> str:
    return f"<{n} restored>"


def failure_line(order_no: str, message: str) -> str:
    return f"<{order_no}: {message}>"


# --- the service's bodies ------------------------------------------------------------------


def result(
    order_no: str,
    code: Code,
    items: Sequence[dict[str, Any]] = (),
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """One entry of a batch answer's ``results``."""
    return {
        "order_no": order_no,
        "code": code.value,
        "outcome": OUTCOME[code].value,
        "message": MESSAGE[code],
        "items": list(items),
        "missing_skus": list(missing),
    }


def batch(results: list[dict[str, Any]], messages: list[str], mall: str = "rakuten") -> Any:
    """A 200 answer to POST /restocks."""
    outcomes = [r["outcome"] for r in results]
    return {
        "mall": mall,
        "counts": {o.value: outcomes.count(o.value) for o in Outcome},
        "results": results,
        "messages": messages,
    }


def record(order_no: str = ORDER_A, repeats: int = 1) -> dict[str, Any]:
    """A 200 answer to GET /restocks/{order_no} for a restored order."""
    return {
        "order_no": order_no,
        "mall": "rakuten",
        "status": "restored",
        "code": "restored",
        "message": MESSAGE[Code.RESTORED],
        "items": LINES,
        "missing_skus": [],
        "requested_at": "2026-05-25T01:00:00Z",
        "completed_at": "2026-05-25T01:00:00Z",
        "repeat_requests": repeats,
    }


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def unavailable(retry_after: str | None = "2") -> httpx.Response:
    """The service's 503 when its database cannot be reached."""
    return httpx.Response(
        503,
        json=problem(503, "Service Unavailable", "the database cannot be reached; retry later"),
        headers={**PROBLEM_JSON, **({"Retry-After": retry_after} if retry_after else {})},
    )


def in_flight() -> httpx.Response:
    """The service's 409 for a key whose first request is still being processed."""
    return httpx.Response(
        409,
        json=problem(409, "Conflict", "a request with this Idempotency-Key is still in flight"),
        headers={**PROBLEM_JSON, "Retry-After": "1"},
    )


def stock(sku: str = "TSHIRT-RED-M", quantity: int = 8) -> dict[str, Any]:
    """A 200 answer to POST /stock/{sku}/adjustments."""
    return {"sku": sku, "quantity": quantity, "updated_at": "2026-05-25T01:00:00Z"}


RESTORED_A = batch([result(ORDER_A, Code.RESTORED, LINES)], [restored_count_line(1)])
ALREADY_A = batch([result(ORDER_A, Code.ALREADY_RESTORED)], [MESSAGE[Code.ALREADY_RESTORED]])


# --- fixtures ------------------------------------------------------------------------------


class FakeSleep:
    """Records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def service() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def client(sleep: FakeSleep, **kw: Any) -> RestockClient:
    kw.setdefault("jitter", 0.0)
    return RestockClient(BASE, sleep=sleep, **kw)


# --- success -------------------------------------------------------------------------------


async def test_success_first_try_gives_typed_results(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    body = batch(
        [
            result(ORDER_A, Code.RESTORED, LINES),
            result(ORDER_B, Code.MALL_CANCEL_FAILED),
            result(ORDER_C, Code.PRODUCT_NOT_FOUND, LINES, ["CAP-01"]),
        ],
        [
            restored_count_line(1),
            FAILURES_HEADER,
            failure_line(ORDER_C, MESSAGE[Code.PRODUCT_NOT_FOUND]),
        ],
    )
    route = service.post("/restocks").mock(return_value=httpx.Response(200, json=body))
    async with client(sleep) as c:
        got = await c.restock(
            Mall.RAKUTEN,
            [
                OrderCancel(ORDER_A, True),
                OrderCancel(ORDER_B, False, "キャンセルできません"),
                {"order_no": ORDER_C, "mall_cancel_succeeded": True},
            ],
            request_id="req-1",
        )

    assert route.call_count == 1
    assert sleep.delays == []
    sent = route.calls[0].request
    assert sent.headers["X-Request-ID"] == "req-1"
    assert "Authorization" not in sent.headers
    assert httpx.Response(200, content=sent.content).json() == {
        "mall": "rakuten",
        "restore_stock": True,
        "orders": [
            {"order_no": ORDER_A, "mall_cancel_succeeded": True},
            {
                "order_no": ORDER_B,
                "mall_cancel_succeeded": False,
                "mall_cancel_message": "キャンセルできません",
            },
            {"order_no": ORDER_C, "mall_cancel_succeeded": True},
        ],
    }
    assert isinstance(got, RestockBatch)
    assert got.mall is Mall.RAKUTEN
    assert (got.counts.success, got.counts.skip, got.counts.fail) == (1, 1, 1)
    assert got.request_id == "req-1"
    assert got.attempts == 1
    assert got.replayed is False
    a, b, c_ = got.results
    assert a.code is Code.RESTORED and a.outcome is Outcome.SUCCESS
    assert a.message == MESSAGE[Code.RESTORED]
    assert a.items == [Line("TSHIRT-RED-M", 2), Line("CAP-01", 1)]
    assert b.code is Code.MALL_CANCEL_FAILED and b.outcome is Outcome.SKIP and b.items == []
    assert c_.code is Code.PRODUCT_NOT_FOUND and c_.outcome is Outcome.FAIL
    assert c_.missing_skus == ["CAP-01"]
    assert got.messages == body["messages"]


async def test_get_restock_gives_a_typed_record(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    service.get(f"/restocks/{ORDER_A}").mock(return_value=httpx.Response(200, json=record()))
    async with client(sleep) as c:
        got = await c.get_restock(ORDER_A)
    assert isinstance(got, RestockRecord)
    assert got.status is RestockStatus.RESTORED and got.code is Code.RESTORED
    assert got.mall is Mall.RAKUTEN
    assert got.items == [Line("TSHIRT-RED-M", 2), Line("CAP-01", 1)]
    assert got.requested_at == datetime(2026, 5, 25, 1, tzinfo=UTC)
    assert got.repeat_requests == 1
    assert got.resolution is None


async def test_get_restock_reads_a_resolution(service: respx.MockRouter, sleep: FakeSleep) -> None:
    resolved = {
        **record(),
        "status": "resolved",
        "code": "product_not_found",
        "message": MESSAGE[Code.PRODUCT_NOT_FOUND],
        "missing_skus": ["CAP-01"],
        "resolution": {
            "note": "adjusted by hand",
            "resolved_by": "ops",
            "resolved_at": "2026-05-26T09:00:00+09:00",
            "actor": "ops-key",
        },
    }
    service.get(f"/restocks/{ORDER_A}").mock(return_value=httpx.Response(200, json=resolved))
    async with client(sleep) as c:
        got = await c.get_restock(ORDER_A)
    assert got is not None and got.status is RestockStatus.RESOLVED
    assert got.resolution is not None and got.resolution.resolved_by == "ops"
    assert got.resolution.resolved_at == datetime(2026, 5, 26, 0, tzinfo=UTC)
    assert got.resolution.actor == "ops-key"


async def test_get_restock_on_404_is_none(service: respx.MockRouter, sleep: FakeSleep) -> None:
    route = service.get(f"/restocks/{ORDER_A}").mock(
        return_value=httpx.Response(
            404,
            json=problem(404, "Not Found", f"no restock is recorded for order {ORDER_A}"),
            headers=PROBLEM_JSON,
        )
    )
    async with client(sleep) as c:
        assert await c.get_restock(ORDER_A) is None
    assert route.call_count == 1


async def test_a_custom_transport_is_used(sleep: FakeSleep) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=RESTORED_A)

    async with client(sleep, transport=httpx.MockTransport(handler)) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert got.results[0].code is Code.RESTORED
    assert [r.url.path for r in seen] == ["/restocks"]


# --- retries -------------------------------------------------------------------------------


async def test_retries_a_connect_error(service: respx.MockRouter, sleep: FakeSleep) -> None:
    route = service.post("/restocks").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=RESTORED_A)]
    )
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 2
    assert sleep.delays == [0.2]
    assert got.attempts == 2
    assert got.results[0].code is Code.RESTORED
    assert got.messages == [restored_count_line(1)]


async def test_retries_a_read_timeout(service: respx.MockRouter, sleep: FakeSleep) -> None:
    route = service.post("/restocks").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=RESTORED_A)]
    )
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 2
    assert got.results[0].code is Code.RESTORED
    assert got.replayed is False  # processed by the retry itself
    assert got.results[0].items == [Line("TSHIRT-RED-M", 2), Line("CAP-01", 1)]


async def test_retries_a_503_honouring_retry_after(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(
        side_effect=[unavailable("2"), httpx.Response(200, json=RESTORED_A)]
    )
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 2
    assert sleep.delays == [2]
    assert got.counts.success == 1


async def test_a_429_of_the_merchants_share_is_retried_after_its_retry_after_naming_the_merchant(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    too_many = httpx.Response(
        429,
        headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
        json={"type": "about:blank", "title": "Too Many Requests", "status": 429},
    )
    route = service.post("/restocks").mock(
        side_effect=[too_many, httpx.Response(200, json=RESTORED_A)]
    )
    async with client(sleep, merchant="shop-a") as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 2
    assert sleep.delays == [1]
    assert [call.request.headers["Merchant-Id"] for call in route.calls] == ["shop-a"] * 2
    assert got.counts.success == 1


async def test_retry_after_as_an_http_date(service: respx.MockRouter, sleep: FakeSleep) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    service.post("/restocks").mock(
        side_effect=[unavailable(when), httpx.Response(200, json=RESTORED_A)]
    )
    async with client(sleep) as c:
        await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert len(sleep.delays) == 1
    assert 27 <= sleep.delays[0] <= 30


def test_parse_retry_after() -> None:
    now = datetime(2026, 5, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("2") == 2
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after("-1") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Mon, 25 May 2026 10:00:07 GMT", now) == 7
    assert parse_retry_after("Mon, 25 May 2026 09:00:00 GMT", now) == 0  # in the past


async def test_a_get_is_retried_too(service: respx.MockRouter, sleep: FakeSleep) -> None:
    route = service.get(f"/restocks/{ORDER_A}").mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(200, json=record())]
    )
    async with client(sleep) as c:
        got = await c.get_restock(ORDER_A)
    assert route.call_count == 2
    assert got is not None and got.order_no == ORDER_A


# --- no retry on 4xx -----------------------------------------------------------------------


async def test_422_is_not_retried_and_carries_the_fields(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    detail = "orders[0].order_no: is not a rakuten order number (like 354396-20260525-0036329794)"
    body = problem(
        422,
        "Unprocessable Content",
        detail,
        errors=[
            {
                "field": "orders[0].order_no",
                "location": "body",
                "message": "is not a rakuten order number (like 354396-20260525-0036329794)",
                "type": "order_no_shape",
                "input": "12345",
            }
        ],
    )
    route = service.post("/restocks").mock(
        return_value=httpx.Response(422, json=body, headers=PROBLEM_JSON)
    )
    async with client(sleep) as c:
        with pytest.raises(RestockRequestError) as caught:
            await c.restock("rakuten", [OrderCancel("12345", True)], request_id="req-422")
    assert route.call_count == 1
    assert sleep.delays == []
    err = caught.value
    assert not isinstance(err, RestockAuthError)
    assert err.status == 422
    assert err.problem == body
    assert err.detail == detail
    assert [(e.field, e.location, e.type, e.input) for e in err.errors] == [
        ("orders[0].order_no", "body", "order_no_shape", "12345")
    ]
    assert err.request_id == "req-422"


@pytest.mark.parametrize(
    ("status", "detail"),
    [(401, "send a valid key as `Authorization: Bearer <key>`"), (403, "a reader key cannot POST")],
)
async def test_401_and_403_are_not_retried(
    service: respx.MockRouter, sleep: FakeSleep, status: int, detail: str
) -> None:
    title = {401: "Unauthorized", 403: "Forbidden"}[status]
    route = service.post("/restocks").mock(
        return_value=httpx.Response(
            status,
            json=problem(status, title, detail),
            headers={**PROBLEM_JSON, "WWW-Authenticate": "Bearer"},
        )
    )
    async with client(sleep, api_key="k") as c:
        with pytest.raises(RestockAuthError) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 1
    assert sleep.delays == []
    assert isinstance(caught.value, RestockRequestError)
    assert caught.value.status == status
    assert caught.value.detail == detail
    assert caught.value.errors == []


async def test_an_unexpected_status_is_not_retried(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(
        return_value=httpx.Response(
            500,
            json=problem(500, "Internal Server Error", "unexpected error"),
            headers=PROBLEM_JSON,
        )
    )
    async with client(sleep) as c:
        with pytest.raises(RestockResponseError) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 1
    assert caught.value.status == 500


async def test_a_body_of_the_wrong_shape_is_an_error(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    service.post("/restocks").mock(return_value=httpx.Response(200, text="<html>ok</html>"))
    async with client(sleep) as c:
        with pytest.raises(RestockResponseError):
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"results": [{**RESTORED_A["results"][0], "code": "restocked"}]}, "results[0].code"),
        ({"results": [{**RESTORED_A["results"][0], "items": [{"sku": "A"}]}]}, "quantity"),
        ({"counts": {"success": "1", "skip": 0, "fail": 0}}, "counts.success"),
        ({"mall": None}, "mall"),
        ({"messages": None}, "messages"),
    ],
)
async def test_a_body_outside_the_schema_is_an_error_naming_the_field(
    service: respx.MockRouter, sleep: FakeSleep, change: dict[str, Any], where: str
) -> None:
    service.post("/restocks").mock(return_value=httpx.Response(200, json={**RESTORED_A, **change}))
    async with client(sleep) as c:
        with pytest.raises(RestockResponseError, match=re.escape(where)) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert caught.value.status == 200 and caught.value.idempotency_key


# --- giving up -----------------------------------------------------------------------------


async def test_repeated_503_exhausts_the_attempts(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(return_value=unavailable(retry_after=None))
    async with client(sleep, max_attempts=6, backoff_base=0.5, backoff_cap=3.0) as c:
        with pytest.raises(RestockUnavailable) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 6
    assert sleep.delays == [0.5, 1.0, 2.0, 3.0, 3.0]  # doubling, then the cap; none after the last
    err = caught.value
    assert err.status == 503 and err.attempts == 6
    assert err.outcome_unknown is False  # every attempt was answered: nothing was applied
    assert err.problem is not None and err.problem["status"] == 503


async def test_backoff_with_jitter_grows_and_respects_the_cap(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(side_effect=httpx.ConnectError("refused"))
    async with client(sleep, max_attempts=8, jitter=0.5) as c:  # defaults: 0.2 s doubling, 5 s
        with pytest.raises(RestockUnavailable) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 8
    assert len(sleep.delays) == 7
    for n, delay in enumerate(sleep.delays):
        full = min(5.0, 0.2 * 2**n)
        assert full / 2 <= delay <= full
    below_cap = sleep.delays[:5]  # 0.2 0.4 0.8 1.6 3.2, each halved at most: they grow
    assert below_cap == sorted(below_cap)
    assert max(sleep.delays) <= 5.0
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.outcome_unknown is False  # nothing was ever sent


async def test_exhausted_after_a_lost_answer_says_the_outcome_is_unknown(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    service.post("/restocks").mock(side_effect=[httpx.ReadTimeout("lost"), unavailable("1")])
    async with client(sleep, max_attempts=2) as c:
        with pytest.raises(RestockUnavailable) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert caught.value.outcome_unknown is True
    assert caught.value.status == 503 and caught.value.retry_after == 1
    assert caught.value.idempotency_key  # to send the call again and get its first answer


async def test_a_retry_after_beyond_the_limit_gives_up_at_once(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(return_value=unavailable("3600"))
    async with client(sleep, max_retry_after=60) as c:
        with pytest.raises(RestockUnavailable) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 1
    assert sleep.delays == []
    assert caught.value.retry_after == 3600


# --- a lost answer and idempotency keys ----------------------------------------------------


async def test_one_idempotency_key_for_every_attempt_of_a_call(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            unavailable("1"),
            httpx.ReadTimeout("answer lost"),
            httpx.Response(200, json=RESTORED_A, headers=REPLAYED),
        ]
    )
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    keys = [call.request.headers[KEY] for call in route.calls]
    assert len(keys) == 4
    assert set(keys) == {got.idempotency_key}
    assert re.fullmatch(r"[0-9a-f]{32}", got.idempotency_key)
    bodies = {call.request.content for call in route.calls}
    assert len(bodies) == 1  # the same bytes each time, or the service would refuse the key


async def test_each_call_gets_a_fresh_key(service: respx.MockRouter, sleep: FakeSleep) -> None:
    restocks = service.post("/restocks").mock(return_value=httpx.Response(200, json=RESTORED_A))
    adjusts = service.post("/stock/TSHIRT-RED-M/adjustments").mock(
        return_value=httpx.Response(200, json=stock())
    )
    async with client(sleep) as c:
        first = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
        second = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
        third = await c.adjust("TSHIRT-RED-M", 1, "棚卸し")
        fourth = await c.adjust("TSHIRT-RED-M", 1, "棚卸し")
    sent = [call.request.headers[KEY] for call in [*restocks.calls, *adjusts.calls]]
    assert sent == [r.idempotency_key for r in (first, second, third, fourth)]
    assert len(set(sent)) == 4


async def test_a_given_idempotency_key_is_used_as_is(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    restocks = service.post("/restocks").mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(200, json=RESTORED_A)]
    )
    adjusts = service.post("/stock/TSHIRT-RED-M/adjustments").mock(
        return_value=httpx.Response(200, json=stock())
    )
    async with client(sleep) as c:
        got = await c.restock(
            "rakuten", [OrderCancel(ORDER_A, True)], idempotency_key="cancel-354396-1"
        )
        level = await c.adjust("TSHIRT-RED-M", 1, "棚卸し", idempotency_key="adjust-1")
    assert [call.request.headers[KEY] for call in restocks.calls] == ["cancel-354396-1"] * 2
    assert got.idempotency_key == "cancel-354396-1"
    assert adjusts.calls[0].request.headers[KEY] == "adjust-1"
    assert level.idempotency_key == "adjust-1"


async def test_a_replayed_answer_after_a_lost_one_is_returned_as_it_is(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    """The first attempt restored the order and its answer was lost: the retry gets it back."""
    post = service.post("/restocks").mock(
        side_effect=[
            httpx.ReadTimeout("answer lost"),
            httpx.Response(200, json=RESTORED_A, headers=REPLAYED),
        ]
    )
    get = service.get(f"/restocks/{ORDER_A}").mock(return_value=httpx.Response(200, json=record()))
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert post.call_count == 2
    assert get.call_count == 0  # nothing is read back: the answer is the first one
    assert got.replayed is True and got.attempts == 2
    (a,) = got.results
    assert (a.code, a.outcome, a.message) == (
        Code.RESTORED,
        Outcome.SUCCESS,
        MESSAGE[Code.RESTORED],
    )
    assert a.items == [Line("TSHIRT-RED-M", 2), Line("CAP-01", 1)]
    assert (got.counts.success, got.counts.skip, got.counts.fail) == (1, 0, 0)
    assert got.messages == [restored_count_line(1)]


async def test_an_already_restored_answer_is_never_relabelled(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    """Even after a lost answer: the service's answer to this call's key is the truth."""
    post = service.post("/restocks").mock(
        side_effect=[httpx.ReadTimeout("answer lost"), httpx.Response(200, json=ALREADY_A)]
    )
    get = service.get(f"/restocks/{ORDER_A}").mock(return_value=httpx.Response(200, json=record()))
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert post.call_count == 2
    assert get.call_count == 0
    assert got.replayed is False
    (a,) = got.results
    assert (a.code, a.outcome, a.items) == (Code.ALREADY_RESTORED, Outcome.SKIP, [])
    assert (got.counts.success, got.counts.skip) == (0, 1)
    assert got.messages == [MESSAGE[Code.ALREADY_RESTORED]]


async def test_a_keyed_409_in_flight_is_retried_and_its_replay_returned(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    """The retry arrives while the lost attempt is still being processed."""
    route = service.post("/restocks").mock(
        side_effect=[
            httpx.ReadTimeout("answer lost"),
            in_flight(),
            httpx.Response(200, json=RESTORED_A, headers=REPLAYED),
        ]
    )
    async with client(sleep) as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
    assert route.call_count == 3
    assert sleep.delays == [0.2, 1]  # backoff after the lost answer, then the Retry-After
    assert len({call.request.headers[KEY] for call in route.calls}) == 1
    assert got.replayed is True and got.attempts == 3
    assert got.results[0].code is Code.RESTORED


async def test_a_409_without_retry_after_is_not_retried(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(
        return_value=httpx.Response(
            409, json=problem(409, "Conflict", "not the answer to retry"), headers=PROBLEM_JSON
        )
    )
    async with client(sleep) as c:
        with pytest.raises(RestockRequestError) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)], idempotency_key="k-409")
    assert route.call_count == 1
    assert sleep.delays == []
    assert caught.value.status == 409
    assert caught.value.idempotency_key == "k-409"


async def test_409s_in_flight_exhaust_the_attempts(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(return_value=in_flight())
    async with client(sleep, max_attempts=3) as c:
        with pytest.raises(RestockUnavailable) as caught:
            await c.restock("rakuten", [OrderCancel(ORDER_A, True)], idempotency_key="busy")
    assert route.call_count == 3
    assert sleep.delays == [1, 1]
    err = caught.value
    assert err.status == 409 and err.retry_after == 1 and err.attempts == 3
    assert err.idempotency_key == "busy"
    assert err.outcome_unknown is False


async def test_a_read_sends_no_idempotency_key(service: respx.MockRouter, sleep: FakeSleep) -> None:
    route = service.get(f"/restocks/{ORDER_A}").mock(
        side_effect=[in_flight(), httpx.Response(200, json=record())]
    )
    async with client(sleep) as c:
        with pytest.raises(RestockRequestError):  # a 409 to an unkeyed call is not "in flight"
            await c.get_restock(ORDER_A)
    assert route.call_count == 1
    assert KEY not in route.calls[0].request.headers


# --- adjust --------------------------------------------------------------------------------


async def test_adjust_sends_its_body_to_the_skus_path_and_gives_a_typed_result(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/stock/TSHIRT-RED-M/adjustments").mock(
        return_value=httpx.Response(200, json=stock(quantity=8))
    )
    async with client(sleep, api_key="secret-key") as c:
        got = await c.adjust("TSHIRT-RED-M", -2, "棚卸し", ORDER_A, request_id="req-adj")
        plain = await c.adjust("TSHIRT-RED-M", 3, "入荷")
    first, second = (call.request for call in route.calls)
    assert first.method == "POST"
    assert httpx.Response(200, content=first.content).json() == {
        "delta": -2,
        "reason": "棚卸し",
        "order_no": ORDER_A,
    }
    assert httpx.Response(200, content=second.content).json() == {"delta": 3, "reason": "入荷"}
    assert first.headers["X-Request-ID"] == "req-adj"
    assert first.headers["Authorization"] == "Bearer secret-key"
    assert first.headers[KEY] == got.idempotency_key
    assert isinstance(got, StockLevel)
    assert (got.sku, got.quantity) == ("TSHIRT-RED-M", 8)
    assert got.updated_at == datetime(2026, 5, 25, 1, tzinfo=UTC)
    assert (got.request_id, got.attempts, got.replayed) == ("req-adj", 1, False)
    assert plain.idempotency_key != got.idempotency_key


async def test_adjust_quotes_the_sku_in_the_path(sleep: FakeSleep) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=stock("A&B", 1))

    async with client(sleep, transport=httpx.MockTransport(handler)) as c:
        got = await c.adjust("A&B", 1, "棚卸し")
    assert seen[0].url.raw_path == b"/stock/A%26B/adjustments"
    assert got.sku == "A&B"


async def test_adjust_after_a_lost_answer_returns_the_replayed_first_answer(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/stock/TSHIRT-RED-M/adjustments").mock(
        side_effect=[
            httpx.ReadError("answer lost"),
            httpx.Response(200, json=stock(quantity=8), headers=REPLAYED),
        ]
    )
    async with client(sleep) as c:
        got = await c.adjust("TSHIRT-RED-M", -2, "棚卸し")
    assert route.call_count == 2
    assert len({call.request.headers[KEY] for call in route.calls}) == 1
    assert (got.quantity, got.replayed, got.attempts) == (8, True, 2)


@pytest.mark.parametrize(
    ("status", "detail"),
    [(404, "no stock is registered for sku NOPE"), (422, "delta: must not be 0")],
)
async def test_adjust_refusals_raise_request_errors(
    service: respx.MockRouter, sleep: FakeSleep, status: int, detail: str
) -> None:
    title = {404: "Not Found", 422: "Unprocessable Content"}[status]
    route = service.post("/stock/NOPE/adjustments").mock(
        return_value=httpx.Response(
            status, json=problem(status, title, detail), headers=PROBLEM_JSON
        )
    )
    async with client(sleep) as c:
        with pytest.raises(RestockRequestError) as caught:
            await c.adjust("NOPE", 0, "棚卸し")
    assert route.call_count == 1
    assert caught.value.status == status and caught.value.detail == detail
    assert caught.value.idempotency_key == route.calls[0].request.headers[KEY]


async def test_adjust_with_a_body_of_the_wrong_shape_is_an_error(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    service.post("/stock/A/adjustments").mock(return_value=httpx.Response(200, json={"sku": "A"}))
    async with client(sleep) as c:
        with pytest.raises(RestockResponseError):
            await c.adjust("A", 1, "棚卸し")


# --- headers -------------------------------------------------------------------------------


async def test_one_request_id_for_every_attempt(
    service: respx.MockRouter, sleep: FakeSleep
) -> None:
    route = service.post("/restocks").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            unavailable("1"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json=RESTORED_A),
            httpx.Response(200, json=RESTORED_A),
        ]
    )
    async with client(sleep, api_key="secret-key") as c:
        got = await c.restock("rakuten", [OrderCancel(ORDER_A, True)])
        await c.restock("rakuten", [OrderCancel(ORDER_A, True)], request_id="given-id")
    ids = [call.request.headers["X-Request-ID"] for call in route.calls]
    assert len(ids) == 5
    assert len(set(ids[:4])) == 1 and ids[0] == got.request_id and ids[0]
    assert ids[4] == "given-id"
    assert all(call.request.headers["Authorization"] == "Bearer secret-key" for call in route.calls)


async def test_aclose_and_the_context_manager(sleep: FakeSleep) -> None:
    c = client(sleep)
    async with c as entered:
        assert entered is c
    with pytest.raises(RuntimeError):  # httpx refuses requests on a closed client
        await c._http.get("/health")
    other = client(sleep)
    await other.aclose()
    with pytest.raises(RuntimeError):
        await other._http.get("/health")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RestockClient(BASE, max_attempts=0)
    with pytest.raises(ValueError):
        RestockClient(BASE, backoff_base=2, backoff_cap=1)


def test_every_error_is_a_restock_error() -> None:
    for cls in (RestockRequestError, RestockAuthError, RestockUnavailable, RestockResponseError):
        assert issubclass(cls, RestockError)
