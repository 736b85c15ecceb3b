"""The operations console (contract v1.2), in process: sign-in, sessions, CSRF, roles, the
sign-in limit, security headers, Japan time, and refusals shown next to their fields.

The walk through a real browser is in test_console_browser.py.
"""

import asyncio
import base64
import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from restock_service import console
from restock_service.access import ApiKeys, Caller, Role
from restock_service.api import create_app
from restock_service.api.console import SECURITY_HEADERS, ConsoleRoute
from restock_service.cli import console_url
from restock_service.config import Settings
from restock_service.messages import MESSAGE, Code, RestockStatus
from restock_service.rules import adjustment_refused
from restock_service.schemas import AdjustmentIn
from restock_service.tables import DEFAULT_MERCHANT
from tests.conftest import empty_tables
from tests.helpers import (
    Database,
    cancel_ok,
    csrf_of,
    key_in_flight,
    order,
    put_stock,
    quantity,
    rakuten,
    sign_in,
    sync,
)

WRITER_KEY = "w-console-key-1"
READER_KEY = "r-console-key-1"
KEYS = f"{WRITER_KEY}:writer,{READER_KEY}:reader"
WRITER, READER = (caller for _, caller in ApiKeys.parse(KEYS).entries)
ORDER = rakuten(4242)
CSP = (
    "default-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
NOTICE = "restock_console_notice="
FORM = re.compile(r"<form [^>]*>.*?</form>", re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture
async def keyed_app(database_url: str, db: Database) -> AsyncIterator[FastAPI]:
    """The application with a writer and a reader key, over empty tables."""
    application = create_app(Settings(database_url=database_url, api_keys=KEYS))
    async with application.router.lifespan_context(application):
        await empty_tables(db)
        yield application


def _client(app: FastAPI, **headers: str) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://test", headers=headers)


@pytest.fixture
async def api(keyed_app: FastAPI) -> AsyncIterator[AsyncClient]:
    """The API, with the writer's key."""
    async with _client(keyed_app, Authorization=f"Bearer {WRITER_KEY}") as c:
        yield c


@pytest.fixture
async def browser(keyed_app: FastAPI) -> AsyncIterator[AsyncClient]:
    """A browser: no key, only what the console's cookie holds."""
    async with _client(keyed_app) as c:
        yield c


async def failed_order(api: AsyncClient, order_no: str = ORDER) -> None:
    """An order whose restock failed: one of its two skus was removed before the cancel."""
    await put_stock(api, "KEEP-1", 10)
    await put_stock(api, "GONE-1", 5)
    await sync(api, order_no, {"KEEP-1": 2, "GONE-1": 1})
    assert (await api.delete("/stock/GONE-1")).status_code == 204
    answer = await cancel_ok(api, [order(order_no)])
    assert answer["results"][0]["code"] == Code.PRODUCT_NOT_FOUND


async def record_status(api: AsyncClient, order_no: str = ORDER) -> str:
    response = await api.get(f"/restocks/{order_no}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def form_of(page: Response, form_id: str) -> dict[str, str]:
    """The hidden fields of the page's form ``form_id`` (its CSRF token, its key, …)."""
    for form in FORM.findall(page.text):
        if f'id="{form_id}"' in form.split(">", 1)[0]:
            return {name: html.unescape(value) for name, value in HIDDEN.findall(form)}
    raise AssertionError(f"no form {form_id!r} in {page.text}")


def adjust_form(page: Response, sku: str) -> dict[str, str]:
    """The hidden fields of the order page's adjustment form of ``sku``."""
    for form in FORM.findall(page.text):
        fields = {name: html.unescape(value) for name, value in HIDDEN.findall(form)}
        if fields.get("sku") == sku:
            return fields
    raise AssertionError(f"no adjustment form of {sku!r} in {page.text}")


def notice_of(page: Response) -> str | None:
    """The notice at the top of the page, if any."""
    found = re.search(r'<p class="notice" role="status">([^<]*)</p>', page.text)
    return html.unescape(found.group(1)) if found else None


def write_forms(page: Response) -> list[str]:
    """The actions of the page's forms that write (sign-out aside)."""
    actions = re.findall(r'<form method="post" action="([^"]+)"', page.text)
    return [a.split("#")[0] for a in actions if a != "/console/logout"]


# --- who may see what ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/console", "/console/failures?mall=rakuten", f"/console/orders/{ORDER}", "/console/skus/A"],
)
async def test_a_visitor_not_signed_in_is_sent_to_the_sign_in_page(
    browser: AsyncClient, path: str
) -> None:
    response = await browser.get(path)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/console/login")
    if path != "/console":
        assert quote(path, safe="") in location  # back there after sign-in


async def test_signing_in_leads_back_to_the_page_asked_for(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    signed = await sign_in(browser, WRITER_KEY, next=f"/console/orders/{ORDER}")
    assert signed.status_code == 303
    assert signed.headers["location"] == f"/console/orders/{ORDER}"
    page = await browser.get(signed.headers["location"])
    assert page.status_code == 200
    assert WRITER.name in page.text


async def test_sign_in_never_leads_off_the_console(browser: AsyncClient) -> None:
    for target in ["https://evil.example/", "//evil.example/console", "/stock/A", "/console\\x"]:
        browser.cookies.clear()
        signed = await sign_in(browser, WRITER_KEY, next=target)
        assert signed.headers["location"] == "/console", target


async def test_the_session_cookie_is_signed_httponly_strict_and_never_holds_the_key(
    browser: AsyncClient,
) -> None:
    signed = await sign_in(browser, WRITER_KEY)
    assert signed.status_code == 303
    cookies = {c.split("=", 1)[0]: c for c in signed.headers.get_list("set-cookie")}
    set_cookie = cookies["restock_console"]
    flags = {part.strip().lower() for part in set_cookie.split(";")}
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/console" in flags
    assert any(flag.startswith("max-age=") for flag in flags)
    value = set_cookie.split(";")[0].split("=", 1)[1]
    assert WRITER_KEY not in value
    payload = console.Sessions(b"x", ApiKeys.parse(KEYS), 60)._serializer.loads_unsafe(value)[1]
    assert payload["n"] == WRITER.name and payload["r"] == "writer"
    assert WRITER_KEY not in str(payload)

    # A cookie whose payload was changed (a reader made writer) is not a session.
    browser.cookies.clear()
    await sign_in(browser, READER_KEY)
    reader_cookie = browser.cookies["restock_console"]
    made_writer = {"s": "x", "n": READER.name, "r": "writer"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(made_writer).encode()).rstrip(b"=")
    forged = forged_payload.decode() + "." + reader_cookie.split(".", 1)[1]
    browser.cookies.clear()
    browser.cookies.set("restock_console", forged, path="/console")
    assert (await browser.get("/console")).status_code == 303


async def test_signing_out_ends_the_session(browser: AsyncClient) -> None:
    await sign_in(browser, WRITER_KEY)
    cookie = browser.cookies["restock_console"]
    home = await browser.get("/console")
    assert home.status_code == 200
    out = await browser.post("/console/logout", data={"csrf_token": csrf_of(home)})
    assert out.status_code == 303
    assert out.headers["location"].startswith("/console/login")
    # The browser's session is replaced by a new one, not signed in.
    assert browser.cookies["restock_console"] != cookie
    assert (await browser.get("/console")).status_code == 303
    # The old cookie, kept and sent again, no longer opens anything.
    browser.cookies.clear()
    browser.cookies.set("restock_console", cookie, path="/console")
    assert (await browser.get("/console")).status_code == 303


async def test_the_sign_in_page_tells_a_sign_out_once_and_never_from_a_link(
    browser: AsyncClient, keyed_app: FastAPI
) -> None:
    async with _client(keyed_app) as stranger:
        linked = await stranger.get("/console/login?signed_out=1")
        assert linked.status_code == 200
        assert console.text("signed_out") not in linked.text
    await sign_in(browser, WRITER_KEY)
    home = await browser.get("/console")
    out = await browser.post("/console/logout", data={"csrf_token": csrf_of(home)})
    told = await browser.get(out.headers["location"])
    assert told.status_code == 200
    assert console.text("signed_out") in told.text
    again = await browser.get("/console/login")
    assert console.text("signed_out") not in again.text


async def test_a_sign_out_is_kept_until_its_cookie_lapses_and_then_purged_in_batches(
    keyed_app: FastAPI,
) -> None:
    store = keyed_app.state.store
    now = datetime.now(UTC)
    for n in range(25):
        await store.sign_out(f"sid-{n}", now + timedelta(seconds=n))
    await store.sign_out("sid-0", now + timedelta(days=1))  # signed out twice: the first stays
    assert await store.signed_out("sid-0")
    assert not await store.signed_out("sid-never")
    later = now + timedelta(seconds=30)
    assert [await store.purge_sign_outs(later, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert not await store.signed_out("sid-0")


def test_a_session_lasts_its_lifetime() -> None:
    now = [1_000_000.0]
    sessions = console.Sessions(b"secret", ApiKeys.parse(KEYS), 60, clock=lambda: now[0])
    session, cookie = sessions.start(WRITER)
    now[0] += 60
    assert sessions.read(cookie) == session
    now[0] += 1
    assert sessions.read(cookie) is None


def test_a_session_ends_when_its_key_is_no_longer_configured() -> None:
    secret = b"configured secret"
    before = console.Sessions(secret, ApiKeys.parse(KEYS), 3600)
    _, cookie = before.start(WRITER)
    after = console.Sessions(secret, ApiKeys.parse(f"{READER_KEY}:reader"), 3600)
    assert after.read(cookie) is None


def test_the_derived_signing_secret_is_the_same_in_every_worker_and_changes_with_the_keys() -> None:
    keys = ApiKeys.parse(KEYS)
    assert console.signing_secret("", keys) == console.signing_secret("", ApiKeys.parse(KEYS))
    assert console.signing_secret("", keys) != console.signing_secret(
        "", ApiKeys.parse(f"{WRITER_KEY}:writer")
    )
    assert console.signing_secret("set", keys) == b"set"
    for key in (WRITER_KEY, READER_KEY):
        assert key.encode() not in console.signing_secret("", keys)


async def test_a_wrong_key_is_refused_next_to_the_field(browser: AsyncClient) -> None:
    refused = await sign_in(browser, "not-a-key")
    assert refused.status_code == 401
    assert console.text("sign_in_failed") in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert "not-a-key" not in refused.text  # the key typed is not echoed
    assert (await browser.get("/console")).status_code == 303


async def test_sign_in_failures_are_limited_per_address(
    browser: AsyncClient, keyed_app: FastAPI
) -> None:
    limiter = keyed_app.state.console.parts.limiter
    for _ in range(limiter.failures - 1):
        assert (await sign_in(browser, "guess")).status_code == 401
    last = await sign_in(browser, "guess")
    assert last.status_code == 429
    assert int(last.headers["retry-after"]) > 0
    # Even the right key waits now: guessing at speed gets nowhere.
    blocked = await sign_in(browser, WRITER_KEY)
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["retry-after"]) <= limiter.window_s
    assert (await browser.get("/console")).status_code == 303


def forget_session(client: AsyncClient) -> None:
    """The browser drops its session cookie and keeps its device cookie."""
    client.cookies.delete("restock_console")


async def test_a_guesser_at_a_shared_address_does_not_lock_out_a_browser_that_signed_in_there(
    keyed_app: FastAPI, browser: AsyncClient
) -> None:
    limiter = keyed_app.state.console.parts.limiter
    assert (await sign_in(browser, WRITER_KEY)).status_code == 303  # known here from now on
    forget_session(browser)
    async with _client(keyed_app) as guesser:  # the same address, and no device cookie
        for _ in range(limiter.failures - 1):
            assert (await sign_in(guesser, "guess")).status_code == 401
        assert (await sign_in(guesser, "guess")).status_code == 429
        assert (await sign_in(guesser, WRITER_KEY)).status_code == 429  # guessing stays limited

    back = await sign_in(browser, WRITER_KEY)
    assert back.status_code == 303, back.text
    assert (await browser.get("/console")).status_code == 200

    # The trade-off: a browser that never signed in here waits as the guesser does, and a
    # device cookie that is not genuine makes no browser known.
    async with _client(keyed_app) as newcomer:
        newcomer.cookies.set("restock_console_device", "forged.cookie", path="/console/login")
        refused = await sign_in(newcomer, WRITER_KEY)
        assert refused.status_code == 429
        assert text_of_limit(refused) in refused.text


def text_of_limit(refused: Response) -> str:
    return console.text("sign_in_limited", seconds=int(refused.headers["retry-after"]))


async def test_a_known_browser_that_guesses_is_limited_by_its_own_failures(
    keyed_app: FastAPI, browser: AsyncClient
) -> None:
    limiter = keyed_app.state.console.parts.limiter
    assert (await sign_in(browser, READER_KEY)).status_code == 303
    forget_session(browser)
    for _ in range(limiter.failures - 1):
        assert (await sign_in(browser, WRITER_KEY + "?")).status_code == 401
    assert (await sign_in(browser, WRITER_KEY + "?")).status_code == 429
    assert (await sign_in(browser, READER_KEY)).status_code == 429

    # Its guesses counted neither against the address nor against the other browsers where
    # the same name signed in: a browser that lost its device cookie (stolen, say, and
    # guessed with) locks out only itself.
    async with _client(keyed_app) as colleague:
        assert (await sign_in(colleague, READER_KEY)).status_code == 303
        forget_session(colleague)
        assert (await sign_in(colleague, READER_KEY)).status_code == 303


async def test_signing_in_again_and_again_gives_a_name_a_bounded_number_of_device_cookies(
    keyed_app: FastAPI, browser: AsyncClient
) -> None:
    """A holder of a key could mint a fresh count with each sign-in; a name gets at most
    ``failures`` new device cookies in the window, and a browser known before keeps its own."""
    limiter = keyed_app.state.console.parts.limiter
    issued = []
    for _ in range(limiter.failures + 1):
        browser.cookies.clear()
        entered = await sign_in(browser, READER_KEY)
        assert entered.status_code == 303
        issued.append(entered.cookies.get("restock_console_device"))
    assert all(issued[: limiter.failures])
    assert len(set(issued[: limiter.failures])) == limiter.failures  # one id each
    assert issued[-1] is None  # the name had its share: this browser counts by its address

    # A known browser keeps its id when it signs in again, whatever was issued meanwhile.
    async with _client(keyed_app) as known:
        known.cookies.set("restock_console_device", issued[0], path="/console/login")
        entered = await sign_in(known, WRITER_KEY)
        assert entered.status_code == 303
        again = entered.cookies.get("restock_console_device")
        sessions = keyed_app.state.console.parts.sessions
        assert sessions.device(again) == sessions.device(issued[0]) is not None


def test_a_device_cookie_names_its_browser_while_genuine_current_and_configured() -> None:
    now = [1_000_000.0]
    sessions = console.Sessions(b"secret", ApiKeys.parse(KEYS), 60, clock=lambda: now[0])
    cookie = sessions.device_cookie(WRITER, None)
    device = sessions.device(cookie)
    assert device is not None
    assert sessions.device(sessions.device_cookie(WRITER, None)) != device  # a new id each
    assert sessions.device(sessions.device_cookie(READER, device)) == device  # kept
    assert WRITER_KEY not in cookie
    assert sessions.device(cookie[:-2] + "xx") is None
    assert sessions.device(sessions.start(WRITER)[1]) is None  # a session is no device cookie
    unconfigured = console.Sessions(b"secret", ApiKeys.parse(f"{READER_KEY}:reader"), 60)
    assert unconfigured.device(cookie) is None
    now[0] += console.DEVICE_LIFETIME_S + 1
    assert sessions.device(cookie) is None


def test_the_sign_in_limit_counts_each_address_and_forgets_old_failures() -> None:
    now = [1000.0]
    limiter = console.SignInLimiter(failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", None) is None
        limiter.failed("10.0.0.1", None)
    assert limiter.retry_after("10.0.0.1", None) == 60
    assert limiter.retry_after("10.0.0.2", None) is None  # another address
    now[0] += 30
    assert limiter.retry_after("10.0.0.1", None) == 30
    now[0] += 30
    assert limiter.retry_after("10.0.0.1", None) is None


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    api: AsyncClient, browser: AsyncClient, keyed_app: FastAPI
) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    adjust = {"delta": "2", "reason": "手動調整", "order_no": ORDER}
    for token in (None, "", "0" * 64):
        form = adjust if token is None else {**adjust, "csrf_token": token}
        refused = await browser.post("/console/skus/KEEP-1", data=form)
        assert refused.status_code == 403
        assert console.text("csrf") in refused.text
        note = {"note": "調整済み"} if token is None else {"note": "調整済み", "csrf_token": token}
        refused = await browser.post(f"/console/orders/{ORDER}", data=note)
        assert refused.status_code == 403
    assert await quantity(api, "KEEP-1") == 8
    assert await record_status(api) == RestockStatus.FAILED

    # Another session's token is not this session's.
    async with _client(keyed_app) as other:
        await sign_in(other, WRITER_KEY)
        theirs = csrf_of(await other.get("/console/skus/KEEP-1"))
    refused = await browser.post("/console/skus/KEEP-1", data={**adjust, "csrf_token": theirs})
    assert refused.status_code == 403
    assert await quantity(api, "KEEP-1") == 8


async def test_a_reader_sees_everything_has_no_forms_that_write_and_cannot_post(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await sign_in(browser, READER_KEY)
    for path in [
        "/console",
        "/console/failures",
        f"/console/orders/{ORDER}",
        "/console/skus/KEEP-1",
    ]:
        page = await browser.get(path)
        assert page.status_code == 200, path
        assert write_forms(page) == [], path
    order_page = await browser.get(f"/console/orders/{ORDER}")
    assert MESSAGE[Code.PRODUCT_NOT_FOUND] in order_page.text
    token = csrf_of(order_page)  # the sign-out form's: a genuine token of this session

    forged = {"delta": "2", "reason": "手動調整", "csrf_token": token}
    refused = await browser.post("/console/skus/KEEP-1", data=forged)
    assert refused.status_code == 403
    assert console.text("reader") in refused.text
    refused = await browser.post(f"/console/orders/{ORDER}", data={**forged, "sku": "KEEP-1"})
    assert refused.status_code == 403
    refused = await browser.post(
        f"/console/orders/{ORDER}", data={"note": "済", "csrf_token": token}
    )
    assert refused.status_code == 403
    assert await quantity(api, "KEEP-1") == 8
    assert await record_status(api) == RestockStatus.FAILED


async def test_console_answers_carry_the_security_headers(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    answers = [
        await browser.get("/console"),  # a redirect
        await browser.get("/console/login"),
        await browser.get("/console/static/console.css"),
        await sign_in(browser, "wrong"),
    ]
    await sign_in(browser, WRITER_KEY)
    answers += [
        await browser.get("/console"),
        await browser.get(f"/console/orders/{ORDER}"),
        await browser.get("/console/orders/354396-20260525-9999999999"),  # 404
        await browser.get("/console/no-such-page"),
        await browser.post("/console/skus/KEEP-1", data={"delta": "1"}),  # 403
    ]
    for answer in answers:
        headers = answer.headers
        assert headers["content-security-policy"].startswith(CSP), answer.url
        assert "script-src" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
    for answer in answers:
        if answer.headers.get("content-type", "").startswith("text/html"):
            assert "<script" not in answer.text
            assert 'style="' not in answer.text
            assert '<html lang="ja">' in answer.text


async def test_a_database_fault_that_is_no_outage_is_the_consoles_own_500_page_logged_once(
    keyed_app: FastAPI, browser: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:  # a constraint the database refused: a defect, not an outage
        raise IntegrityError("INSERT …", {}, Exception("violates check constraint"))

    keyed_app.router.routes.insert(0, ConsoleRoute("/console/broken", broken, methods=["GET"]))
    page = await browser.get("/console/broken")

    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert console.text("unexpected") in html.unescape(page.text)
    assert {k.lower(): v for k, v in SECURITY_HEADERS.items()}.items() <= page.headers.items()
    assert "Retry-After" not in page.headers
    logged = [r for r in caplog.records if r.getMessage().startswith("database error on")]
    assert len(logged) == 1


async def test_the_api_answers_carry_no_console_headers(api: AsyncClient) -> None:
    answer = await api.get("/health")
    assert "content-security-policy" not in answer.headers
    assert "set-cookie" not in answer.headers


async def test_without_keys_the_console_opens_with_a_warning_banner(client: AsyncClient) -> None:
    page = await client.get("/console")
    assert page.status_code == 200
    assert "RESTOCK_API_KEYS" in page.text
    assert 'class="banner"' in page.text
    assert (await client.get("/console/login")).headers["location"] == "/console"


async def test_without_keys_a_change_records_no_actor_and_asks_who_resolved(
    client: AsyncClient,
) -> None:
    await failed_order(client)
    page = await client.get(f"/console/orders/{ORDER}")
    assert "担当者名を入力してください" in page.text
    form = form_of(page, "resolve")
    refused = await client.post(f"/console/orders/{ORDER}", data={"note": "済", **form})
    assert refused.status_code == 422  # resolved_by: nobody signed in to default to
    resolved = await client.post(
        f"/console/orders/{ORDER}", data={"note": "済", "resolved_by": "山田", **form}
    )
    assert resolved.status_code == 303
    record = (await client.get(f"/restocks/{ORDER}")).json()
    assert record["resolution"]["resolved_by"] == "山田"
    assert record["resolution"]["actor"] is None


async def test_the_console_is_not_in_the_openapi_document(keyed_app: FastAPI) -> None:
    assert not [path for path in keyed_app.openapi()["paths"] if path.startswith("/console")]


@pytest.mark.parametrize("fast_routes", [True, False])
async def test_the_console_answers_alike_with_and_without_the_short_way(
    database_url: str, db: Database, fast_routes: bool
) -> None:
    application = create_app(Settings(database_url=database_url), fast_routes=fast_routes)
    async with application.router.lifespan_context(application):
        await empty_tables(db)
        async with _client(application) as c:
            await put_stock(c, "A", 3)
            assert (await c.get("/console")).status_code == 200
            page = await c.get("/console/skus/A")
            assert page.status_code == 200
            done = await c.post(
                "/console/skus/A", data={"delta": "2", "reason": "棚卸", **form_of(page, "adjust")}
            )
            assert done.status_code == 303
            assert await quantity(c, "A") == 5


# --- the pages ---------------------------------------------------------------------------------


def test_times_are_shown_in_japan_time_with_the_offset() -> None:
    assert console.jst(datetime(2026, 5, 25, 10, 0, tzinfo=UTC)) == "2026-05-25 19:00:00 +09:00"
    assert console.jst(datetime(2026, 5, 25, 15, 30, 5, tzinfo=UTC)) == (
        "2026-05-26 00:30:05 +09:00"
    )


async def test_the_order_page_tells_the_whole_story_in_japan_time(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await put_stock(api, "KEEP-1", 10)
    await put_stock(api, "GONE-1", 5)
    executed = {
        "order_no": ORDER,
        "mall": "rakuten",
        "items": [{"sku": "KEEP-1", "quantity": 2}, {"sku": "GONE-1", "quantity": 1}],
        "executed_at": "2026-05-25T10:00:00+00:00",
    }
    assert (await api.post("/sync-executions", json=executed)).status_code == 201
    assert (await api.delete("/stock/GONE-1")).status_code == 204
    await cancel_ok(api, [order(ORDER)])
    await cancel_ok(api, [order(ORDER)])  # a repeat
    await sign_in(browser, WRITER_KEY)
    page = await browser.get(f"/console/orders/{ORDER}")
    assert page.status_code == 200
    text = page.text
    assert "2026-05-25 19:00:00 +09:00" in text  # the sync execution, in JST
    assert MESSAGE[Code.PRODUCT_NOT_FOUND] in text
    assert "その後 1 回受信" in text
    assert text.index("在庫連携で在庫を引き当て") < text.index("在庫戻しの依頼を受信")
    # the ledger rows that name the order: the sync's deductions
    assert text.count("在庫連携（受注の引当）") == 2
    assert write_forms(page) == [f"/console/orders/{ORDER}"] * 3  # two skus, and resolve


async def test_the_failures_list_pages_newest_first_and_filters_by_mall(
    api: AsyncClient, browser: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restock_service.api import console as console_api

    monkeypatch.setattr(console_api, "PAGE_SIZE", 2)
    await failed_order(api, rakuten(1))
    for n in range(2, 6):
        await _another_failure(api, n)
    await sign_in(browser, READER_KEY)
    seen: list[str] = []
    url: str | None = "/console/failures?mall=rakuten"
    while url:
        page = await browser.get(url)
        assert page.status_code == 200
        seen += re.findall(r">(354396-20260525-\d{10})</a>", page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = html.unescape(found.group(1)) if found else None
    assert seen == [rakuten(n) for n in range(5, 0, -1)]
    assert (await browser.get("/console/failures?mall=amazon")).text.count("354396-") == 0
    assert (await browser.get("/console/failures?mall=ebay")).status_code == 400
    assert (await browser.get("/console/failures?cursor=garbage")).status_code == 400
    home = await browser.get("/console")
    assert "楽天市場" in home.text and "5件" in home.text


async def _another_failure(api: AsyncClient, n: int) -> None:
    await put_stock(api, "GONE-1", 1)
    await sync(api, rakuten(n), {"GONE-1": 1})
    assert (await api.delete("/stock/GONE-1")).status_code == 204
    await cancel_ok(api, [order(rakuten(n))])


async def test_a_refusal_is_shown_in_japanese_next_to_its_field(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    page = await browser.get("/console/skus/KEEP-1")
    form_fields = form_of(page, "adjust")  # refused by validation, the form keeps its key
    said = console.field_message
    cases = [
        ({"delta": "0", "reason": "x"}, "delta", said("delta", "value_error", {})),
        ({"delta": "abc", "reason": "x"}, "delta", said("delta", "int_type", {})),
        ({"delta": "1", "reason": ""}, "reason", said("reason", "string_too_short", {})),
        (
            {"delta": "1", "reason": "x" * 201},
            "reason",
            said("reason", "string_too_long", {"max_length": 200}),
        ),
        (
            {"delta": "1", "reason": "x", "order_no": "-bad"},
            "order_no",
            said("order_no", "string_pattern_mismatch", {}),
        ),
        (
            {"delta": "1000000001", "reason": "x"},
            "delta",
            said("delta", "less_than_equal", {"le": 1_000_000_000}),
        ),
    ]
    for form, field, message in cases:
        refused = await browser.post("/console/skus/KEEP-1", data={**form, **form_fields})
        assert refused.status_code == 422, (form, refused.text)
        error = re.search(rf'<p class="field-error" id="{field}-error">([^<]+)</p>', refused.text)
        assert error and html.unescape(error.group(1)) == message, (form, refused.text)
        assert f'id="{field}" name="{field}"' in refused.text
        assert 'aria-invalid="true" aria-describedby="' + field + '-error"' in refused.text
    assert await quantity(api, "KEEP-1") == 8

    # The bound on the quantity an adjustment leaves (the adapters' check).
    await put_stock(api, "FULL-1", 1_000_000_000)
    full = {"delta": 1_000_000_000, "reason": "x"}
    assert (await api.post("/stock/FULL-1/adjustments", json=full)).status_code == 200
    full_page = await browser.get("/console/skus/FULL-1")
    refused = await browser.post(
        "/console/skus/FULL-1", data={"delta": "1", "reason": "x", **form_of(full_page, "adjust")}
    )
    assert refused.status_code == 422
    assert console.problem_errors([adjustment_refused(2_000_000_000, 1)])["delta"] in refused.text
    assert await quantity(api, "FULL-1") == 2_000_000_000

    # From the order page: the sku that is not registered, next to its own form.
    order_page = await browser.get(f"/console/orders/{ORDER}")
    refused = await browser.post(
        f"/console/orders/{ORDER}",
        data={"delta": "1", "reason": "x", "order_no": ORDER, **adjust_form(order_page, "GONE-1")},
    )
    assert refused.status_code == 404
    assert console.text("sku_not_registered") in refused.text
    # Full-width digits, as typed on a Japanese keyboard, are numbers.
    done = await browser.post(
        f"/console/orders/{ORDER}",
        data={
            "delta": "＋２",
            "reason": "x",
            "order_no": ORDER,
            **adjust_form(order_page, "KEEP-1"),
        },
    )
    assert done.status_code == 303
    assert await quantity(api, "KEEP-1") == 10


async def test_resolving_from_a_second_page_is_a_conflict_shown_on_the_page(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    one, other = [await browser.get(f"/console/orders/{ORDER}") for _ in range(2)]
    first = await browser.post(
        f"/console/orders/{ORDER}", data={"note": "済", **form_of(one, "resolve")}
    )
    assert first.status_code == 303
    again = await browser.post(
        f"/console/orders/{ORDER}", data={"note": "済", **form_of(other, "resolve")}
    )
    assert again.status_code == 409
    assert console.text("not_failed", status=console.STATUS_LABEL[RestockStatus.RESOLVED]) in (
        again.text
    )


async def test_a_writer_works_off_a_failure_and_is_named_as_its_actor(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await put_stock(api, "GONE-1", 0)  # the merchant registers the product again
    await sign_in(browser, WRITER_KEY)
    listed = await browser.get("/console/failures")
    assert ORDER in listed.text
    page = await browser.get(f"/console/orders/{ORDER}")
    adjusted = await browser.post(
        f"/console/orders/{ORDER}",
        data={
            "delta": "1",
            "reason": console.DEFAULT_ADJUSTMENT_REASON,
            "order_no": ORDER,
            **adjust_form(page, "GONE-1"),
        },
    )
    assert adjusted.status_code == 303
    shown = await browser.get(adjusted.headers["location"])
    assert notice_of(shown) == console.text("adjusted", sku="GONE-1", delta=1, quantity=1)
    resolved = await browser.post(
        f"/console/orders/{ORDER}", data={"note": "手動で加算済み", **form_of(shown, "resolve")}
    )
    assert resolved.status_code == 303
    assert ORDER not in (await browser.get("/console/failures")).text
    record = (await api.get(f"/restocks/{ORDER}")).json()
    assert record["status"] == RestockStatus.RESOLVED
    assert record["resolution"]["resolved_by"] == WRITER.name
    assert record["resolution"]["actor"] == WRITER.name
    movements = (await api.get("/stock/GONE-1/movements")).json()["items"]
    assert (movements[-1]["reason"], movements[-1]["actor"]) == ("adjustment", WRITER.name)
    sku_page = await browser.get("/console/skus/GONE-1")
    row = sku_page.text[sku_page.text.index("手動調整</td>") :]
    assert WRITER.name in row[: row.index("</tr>")]


def test_a_form_adjustment_is_validated_by_the_apis_model() -> None:
    assert AdjustmentIn.model_validate(
        console.adjustment_body({"delta": " -３ ", "reason": "棚卸", "order_no": ""})
    ) == AdjustmentIn(delta=-3, reason="棚卸")
    with pytest.raises(ValidationError) as refused:
        AdjustmentIn.model_validate(console.adjustment_body({"delta": "", "reason": ""}))
    assert set(console.validation_errors(refused.value)) == {"delta", "reason"}


def test_sessions_before_sign_in_carry_no_role() -> None:
    sessions = console.Sessions(b"s", ApiKeys.parse(KEYS), 60)
    anonymous, cookie = sessions.start(None)
    assert sessions.read(cookie) == anonymous
    assert not anonymous.signed_in and not anonymous.may_write
    assert sessions.csrf_ok(anonymous, sessions.csrf_token(anonymous))
    assert not sessions.csrf_ok(anonymous, sessions.csrf_token(sessions.start(None)[0]))
    assert Caller(WRITER.name, Role.WRITER) == WRITER
    assert timedelta(hours=9) == console.JST.utcoffset(None)


def test_serve_names_the_consoles_address() -> None:
    assert console_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/console"
    assert console_url("0.0.0.0", 9000) == "http://127.0.0.1:9000/console"
    assert console_url("::1", 8000) == "http://[::1]:8000/console"


# --- each form applies once ----------------------------------------------------------------


async def _registered(api: AsyncClient, browser: AsyncClient, sku: str, quantity: int) -> None:
    await put_stock(api, sku, quantity)
    await sign_in(browser, WRITER_KEY)


async def test_an_adjustment_form_posted_twice_moves_the_stock_once_and_lands_on_its_result(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await _registered(api, browser, "A", 3)
    form = {
        "delta": "1",
        "reason": "棚卸",
        **form_of(await browser.get("/console/skus/A"), "adjust"),
    }
    first = await browser.post("/console/skus/A", data=form)
    again = await browser.post("/console/skus/A", data=form)  # a double click, a retry
    assert (first.status_code, again.status_code) == (303, 303)
    assert first.headers["location"] == again.headers["location"]
    assert await quantity(api, "A") == 4
    shown = await browser.get(again.headers["location"])
    assert notice_of(shown) == console.text("adjusted", sku="A", delta=1, quantity=4)
    movements = (await api.get("/stock/A/movements")).json()["items"]
    assert [m["reason"] for m in movements] == ["set", "adjustment"]


async def test_an_adjustment_form_of_the_order_page_posted_twice_applies_once(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    page = await browser.get(f"/console/orders/{ORDER}")
    form = {"delta": "2", "reason": "x", "order_no": ORDER, **adjust_form(page, "KEEP-1")}
    answers = [await browser.post(f"/console/orders/{ORDER}", data=form) for _ in range(2)]
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"]
    assert await quantity(api, "KEEP-1") == 10  # 8 + 2, once


async def test_a_resolve_form_posted_twice_resolves_once_and_both_land_on_its_result(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    form = {"note": "済", **form_of(await browser.get(f"/console/orders/{ORDER}"), "resolve")}
    first = await browser.post(f"/console/orders/{ORDER}", data=form)
    again = await browser.post(f"/console/orders/{ORDER}", data=form)
    assert (first.status_code, again.status_code) == (303, 303)
    assert first.headers["location"] == again.headers["location"]
    shown = await browser.get(again.headers["location"])
    assert notice_of(shown) == console.text("resolved")
    assert await record_status(api) == RestockStatus.RESOLVED


async def test_concurrent_posts_of_one_form_apply_once_and_all_land_on_its_result(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await _registered(api, browser, "A", 3)
    form = {
        "delta": "1",
        "reason": "棚卸",
        **form_of(await browser.get("/console/skus/A"), "adjust"),
    }
    answers = await asyncio.gather(*(browser.post("/console/skus/A", data=form) for _ in range(6)))
    assert {a.status_code for a in answers} == {303}, [a.text for a in answers]
    assert {a.headers["location"] for a in answers} == {"/console/skus/A#top"}
    assert await quantity(api, "A") == 4

    await failed_order(api)
    page = await browser.get(f"/console/orders/{ORDER}")
    resolve = {"note": "済", **form_of(page, "resolve")}
    answers = await asyncio.gather(
        *(browser.post(f"/console/orders/{ORDER}", data=resolve) for _ in range(6))
    )
    assert {a.status_code for a in answers} == {303}, [a.text for a in answers]
    record = (await api.get(f"/restocks/{ORDER}")).json()
    assert record["status"] == RestockStatus.RESOLVED


def _form_key(form: dict[str, str], path: str) -> tuple[str, str]:
    """The (owner, key) of the form's claim, as its first post takes it."""
    claim = console.form_claim(
        DEFAULT_MERCHANT, WRITER.name, path, form, datetime.now(UTC), ttl_s=60
    )
    assert claim is not None
    return claim.owner, claim.key


async def test_a_post_waits_for_the_first_post_of_its_form_still_in_its_write(
    api: AsyncClient, browser: AsyncClient, db: Database
) -> None:
    await _registered(api, browser, "A", 3)
    form = {"delta": "1", "reason": "x", **form_of(await browser.get("/console/skus/A"), "adjust")}
    owner, key = _form_key(form, "/console/skus/A")
    async with key_in_flight(db, key, owner=owner, for_s=0.3):  # then that post dies
        answer = await browser.post("/console/skus/A", data=form)
    assert answer.status_code == 303, answer.text
    assert await quantity(api, "A") == 4


async def test_a_post_whose_first_post_stays_in_its_write_is_told_so_and_does_nothing(
    api: AsyncClient, browser: AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL tells it after FORM_WAIT_S; SQLite waits for the first post's write lock,
    and then applies (the first post died)."""
    from restock_service.api import console as console_api

    monkeypatch.setattr(console_api, "FORM_WAIT_S", 0.2)
    await _registered(api, browser, "A", 3)
    form = {"delta": "1", "reason": "x", **form_of(await browser.get("/console/skus/A"), "adjust")}
    owner, key = _form_key(form, "/console/skus/A")
    async with key_in_flight(db, key, owner=owner, for_s=1.0):
        answer = await browser.post("/console/skus/A", data=form)
        during = await quantity(api, "A")
    if db.dialect == "postgresql":
        assert answer.status_code == 409
        assert console.text("form_in_flight") in answer.text
        assert during == 3
    else:
        assert answer.status_code == 303
        assert during == 4


async def test_a_form_sent_again_with_other_fields_is_refused_and_changes_nothing(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await _registered(api, browser, "A", 3)
    page = await browser.get("/console/skus/A")
    form = {"delta": "1", "reason": "棚卸", **form_of(page, "adjust")}
    assert (await browser.post("/console/skus/A", data=form)).status_code == 303
    edited = await browser.post("/console/skus/A", data={**form, "delta": "5"})
    assert edited.status_code == 422
    assert console.text("form_reused") in edited.text
    assert await quantity(api, "A") == 4
    # the page it shows has a form of its own, which applies
    fresh = form_of(edited, "adjust")
    assert fresh[console.FORM_KEY_FIELD] != form[console.FORM_KEY_FIELD]
    again = await browser.post("/console/skus/A", data={**form, **fresh, "delta": "5"})
    assert again.status_code == 303
    assert await quantity(api, "A") == 9


async def test_a_form_refused_by_validation_keeps_nothing_and_applies_once_corrected(
    api: AsyncClient, browser: AsyncClient
) -> None:
    await _registered(api, browser, "A", 3)
    form = {"reason": "棚卸", **form_of(await browser.get("/console/skus/A"), "adjust")}
    refused = await browser.post("/console/skus/A", data={**form, "delta": "0"})
    assert refused.status_code == 422
    assert form_of(refused, "adjust")[console.FORM_KEY_FIELD] != form[console.FORM_KEY_FIELD]
    assert await quantity(api, "A") == 3
    corrected = await browser.post("/console/skus/A", data={**form, "delta": "1"})
    assert corrected.status_code == 303
    assert await quantity(api, "A") == 4


@pytest.mark.parametrize("key", [None, "", "short", "x" * 65, "bad key with spaces!"])
async def test_a_post_without_a_forms_key_is_refused_and_changes_nothing(
    api: AsyncClient, browser: AsyncClient, key: str | None
) -> None:
    await _registered(api, browser, "A", 3)
    form = form_of(await browser.get("/console/skus/A"), "adjust")
    del form[console.FORM_KEY_FIELD]
    if key is not None:
        form[console.FORM_KEY_FIELD] = key
    refused = await browser.post("/console/skus/A", data={"delta": "1", "reason": "x", **form})
    assert refused.status_code == 400
    assert console.text("form_stale") in refused.text
    assert await quantity(api, "A") == 3


async def test_a_forms_key_is_the_signed_in_callers_so_another_caller_posting_it_applies_anew(
    database_url: str, db: Database
) -> None:
    """Two writers' keys: a form key posted by one of them is not the other's."""
    other_key = "w-console-key-2"
    app = create_app(Settings(database_url=database_url, api_keys=f"{KEYS},{other_key}:writer"))
    async with (
        app.router.lifespan_context(app),
        _client(app, Authorization=f"Bearer {WRITER_KEY}") as api,
        _client(app) as mine,
        _client(app) as theirs,
    ):
        await empty_tables(db)
        await _registered(api, mine, "A", 3)
        assert (await sign_in(theirs, other_key)).status_code == 303
        form = {"delta": "1", "reason": "x", **form_of(await mine.get("/console/skus/A"), "adjust")}
        assert (await mine.post("/console/skus/A", data=form)).status_code == 303
        assert (await mine.post("/console/skus/A", data=form)).status_code == 303  # a replay
        assert await quantity(api, "A") == 4
        # The same key and fields from another caller (its own CSRF token) is its own write.
        theirs_form = {
            **form,
            "csrf_token": form_of(await theirs.get("/console/skus/A"), "adjust")["csrf_token"],
        }
        assert (await theirs.post("/console/skus/A", data=theirs_form)).status_code == 303
        assert await quantity(api, "A") == 5


def test_a_forms_fingerprint_is_its_path_and_fields_not_its_token() -> None:
    now = datetime.now(UTC)
    base = {"delta": "1", "reason": "x", "form_key": "k" * 22, "csrf_token": "a"}

    def fingerprint(path: str, form: dict[str, str]) -> bytes:
        claim = console.form_claim(DEFAULT_MERCHANT, "n", path, form, now, ttl_s=60)
        assert claim is not None
        return claim.fingerprint

    same = fingerprint("/console/skus/A", base)
    assert fingerprint("/console/skus/A", {**base, "csrf_token": "b"}) == same
    assert fingerprint("/console/skus/A", dict(reversed(base.items()))) == same
    assert fingerprint("/console/skus/B", base) != same
    assert fingerprint("/console/skus/A", {**base, "delta": "2"}) != same
    assert fingerprint("/console/skus/A", {**base, "order_no": ""}) != same


# --- notices -------------------------------------------------------------------------------


async def test_a_link_cannot_make_a_notice(api: AsyncClient, browser: AsyncClient) -> None:
    await failed_order(api)
    await sign_in(browser, WRITER_KEY)
    for link in [
        f"/console/orders/{ORDER}?done=resolved",
        f"/console/orders/{ORDER}?done=adjusted&sku=KEEP-1&delta=0&quantity=0",
        "/console/skus/KEEP-1?done=adjusted&delta=999&quantity=0",
        "/console/skus/KEEP-1?done=adjusted&sku=全部&delta=1&quantity=1",
    ]:
        page = await browser.get(link)
        assert page.status_code == 200, link
        assert notice_of(page) is None, link
        assert console.text("resolved") not in page.text
    assert await record_status(api) == RestockStatus.FAILED


@pytest.mark.parametrize("sku", ["A", "A&B'<x>=!"])
async def test_a_write_tells_its_notice_once(
    api: AsyncClient, browser: AsyncClient, sku: str
) -> None:
    await _registered(api, browser, sku, 3)
    path = "/console/skus/" + quote(sku, safe="")
    form = {"delta": "2", "reason": "x", **form_of(await browser.get(path), "adjust")}
    done = await browser.post(path, data=form)
    assert done.status_code == 303
    assert "?" not in done.headers["location"]  # nothing of the outcome in the address
    shown = await browser.get(done.headers["location"])
    assert notice_of(shown) == console.text("adjusted", sku=sku, delta=2, quantity=5)
    again = await browser.get(done.headers["location"])  # a reload
    assert notice_of(again) is None


async def test_a_notice_is_told_only_to_its_session_and_on_its_page(
    api: AsyncClient, browser: AsyncClient, keyed_app: FastAPI
) -> None:
    await _registered(api, browser, "A", 3)
    await put_stock(api, "B", 3)
    form = {"delta": "1", "reason": "x", **form_of(await browser.get("/console/skus/A"), "adjust")}
    done = await browser.post("/console/skus/A", data=form)
    cookie = done.cookies["restock_console_notice"]
    # on another page it says nothing (and is gone)
    assert notice_of(await browser.get("/console/skus/B")) is None
    async with _client(keyed_app) as other:  # another session, with the cookie copied
        await sign_in(other, WRITER_KEY)
        other.cookies.set("restock_console_notice", cookie, path="/console")
        assert notice_of(await other.get("/console/skus/A")) is None


async def test_a_told_notice_is_deleted_with_the_attributes_it_was_set_with(
    api: AsyncClient, keyed_app: FastAPI
) -> None:
    async with AsyncClient(transport=ASGITransport(app=keyed_app), base_url="https://t") as tls:
        await _registered(api, tls, "A", 3)
        form = {"delta": "1", "reason": "x", **form_of(await tls.get("/console/skus/A"), "adjust")}
        done = await tls.post("/console/skus/A", data=form)
        shown = await tls.get(done.headers["location"])
    (set_line,) = [c for c in done.headers.get_list("set-cookie") if c.startswith(NOTICE)]
    (delete_line,) = [c for c in shown.headers.get_list("set-cookie") if c.startswith(NOTICE)]

    def attributes(line: str) -> set[str]:
        parts = {part.strip().lower() for part in line.split(";")[1:]}
        return {p for p in parts if not p.startswith(("max-age", "expires"))}

    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= attributes(set_line)
    assert attributes(delete_line) == attributes(set_line)
    assert "max-age=0" in delete_line.lower()


def test_a_notice_lapses_and_cannot_be_forged() -> None:
    now = [1_000_000.0]
    notices = console.Notices(b"secret", max_age_s=60, clock=lambda: now[0])
    session = console.Session("sid", "n", Role.WRITER)
    cookie = notices.seal(session, "/console/skus/A", "resolved")
    assert notices.open(cookie, session, "/console/skus/A") == console.text("resolved")
    assert (
        notices.open(cookie, console.Session("sid2", "n", Role.WRITER), "/console/skus/A") is None
    )
    forged = console.Notices(b"other", clock=lambda: now[0]).seal(
        session, "/console/skus/A", "resolved"
    )
    assert notices.open(forged, session, "/console/skus/A") is None
    assert (
        notices.open(notices.seal(session, "/console/skus/A", "csrf"), session, "/console/skus/A")
        is None
    )
    now[0] += 61
    assert notices.open(cookie, session, "/console/skus/A") is None
