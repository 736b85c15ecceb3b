"""The operations console (contract v1.2): server-rendered pages in Japanese under /console.

The pages read through the store and write through the same services as the API
(``restock.resolve_restock``, ``stock.adjust_stock``), with the same rules and errors. The
session, the CSRF check and the security headers are handled here, by the console's own
route class, so the API's requests pay nothing for them. Everything that is not HTTP lives
in restock_service/console.py.
"""

import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from restock_service import console, cursors, idempotency, restock, stock
from restock_service.api.errors import unavailable
from restock_service.console import Console, FormErrors, Session, text
from restock_service.errors import Conflict, InvalidRequest, NotFound
from restock_service.faults import DATABASE_ERRORS
from restock_service.idempotency import Claim, Keyed
from restock_service.merchants import Merchant
from restock_service.messages import Code, Mall, RestockStatus
from restock_service.schemas import (
    ORDER_NO_PATTERN,
    SKU_PATTERN,
    AdjustmentIn,
    ResolutionIn,
)
from restock_service.scope import Scope
from restock_service.store import Store
from restock_service.tables import DEFAULT_MERCHANT, is_merchant_id

T = TypeVar("T")

COOKIE = "restock_console"
DEVICE_COOKIE = "restock_console_device"
NOTICE_COOKIE = "restock_console_notice"
# How long a second post of a form waits for the first, still in its write (PostgreSQL).
FORM_WAIT_S = 5.0
CSRF_FIELD = console.CSRF_FIELD
PAGE_SIZE = 50
HOME_FAILURES_PER_MALL = 5
HOME_RECENT = 20
FAILURES_CURSOR = "console-failures"
MERCHANTS_PER_PAGE = 50

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

_ORDER_NO = re.compile(ORDER_NO_PATTERN)
_SKU = re.compile(SKU_PATTERN)
STYLESHEET_PATH = "/console/static/console.css"
_STYLESHEET = resources.files("restock_service").joinpath("static/console.css").read_bytes()
_templates = Environment(
    loader=PackageLoader("restock_service", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["jst"] = console.jst
_templates.globals.update(
    mall_label=console.MALL_LABEL,
    status_label=console.STATUS_LABEL,
    movement_label=console.MOVEMENT_LABEL,
    role_label=console.ROLE_LABEL,
    malls=list(Mall),
    Status=RestockStatus,
    Code=Code,
    form_key=console.new_form_key,
)


class _Answer(Exception):
    """Ends a console request with ``response`` (a redirect, a refusal)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ConsoleRoute(APIRoute):
    """A console route: its answer gets the security headers, and the session cookie when
    one was started; a database out of reach is a page that says so (503), and any other
    database fault a page of its own (500). The stylesheet needs no session, and so no
    database."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        sessionless = self.path == STYLESHEET_PATH

        async def answer(request: Request) -> Response:
            try:
                if not sessionless:
                    await _read_session(request)
                response = await handler(request)
            except _Answer as exc:
                response = exc.response
            except DATABASE_ERRORS as exc:
                if unavailable(exc, request.method, request.url.path):
                    response = _error_page(request, 503, text("unavailable"))
                    response.headers["Retry-After"] = str(_state(request).retry_after_s)
                else:  # a defect, logged once by ``unavailable``, told as a page
                    response = _error_page(request, 500, text("unexpected"))
            started: str | None = getattr(request.state, "console_cookie", None)
            if started is not None:
                lifetime = _state(request).parts.sessions.lifetime_s
                _cookie(request, response, COOKIE, started, lifetime)
            if getattr(request.state, "console_notice_taken", False):
                _cookie(request, response, NOTICE_COOKIE, "", 0)  # told: delete it
            response.headers.update(SECURITY_HEADERS)
            return response

        return answer


# The console's own pages (the stylesheet, sign-in and sign-out), a merchant's pages, and
# any other console address, assembled in that order in ``router`` at the end.
own = APIRouter(prefix="/console", route_class=ConsoleRoute)
pages = APIRouter(route_class=ConsoleRoute)  # at /console, and at MERCHANT_PAGES
MERCHANT_PAGES = "/console/merchants/{merchant_id}"


class ConsoleState:
    """The console's parts and settings, kept on ``app.state.console``."""

    def __init__(self, parts: Console, retry_after_s: int, key_ttl_s: int) -> None:
        self.parts = parts
        self.retry_after_s = retry_after_s
        self.key_ttl_s = key_ttl_s


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# --- sessions and checks ---------------------------------------------------------------------


def _cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    max_age: int,
    path: str = "/console",
) -> None:
    """Set one of the console's cookies: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


async def _read_session(request: Request) -> None:
    """The visitor's session, read once per request (a signed-in one is looked up in the
    database, for a sign-out made on another process), for ``_session``."""
    sessions = _state(request).parts.sessions
    cookie = request.cookies.get(COOKIE)
    await sessions.look(_store(request))
    request.state.console_session = await sessions.current(cookie, _store(request))


def _session(request: Request) -> Session | None:
    session: Session | None = getattr(request.state, "console_session", None)
    return session


def _start(request: Request, caller: Any = None) -> Session:
    """A new session whose cookie goes out with the answer."""
    session, cookie = _state(request).parts.sessions.start(caller)
    request.state.console_cookie = cookie
    request.state.console_session = session
    return session


def _signed_in(request: Request) -> Session:
    """The visitor's session; with keys configured, one who is not signed in goes to the
    sign-in page. With no keys, everyone is in (and gets a session for the CSRF token)."""
    session = _session(request)
    if session is not None and session.signed_in:
        return session
    if _state(request).parts.sessions.open:
        return _start(request)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    next_page = "" if target == "/console" else "?" + urlencode({"next": target})
    raise _Answer(RedirectResponse("/console/login" + next_page, status_code=303))


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields (the first value of each); a page saying so otherwise."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _Answer(_error_page(request, 400, text("bad_form")))
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=50
        )
    except (UnicodeDecodeError, ValueError):
        raise _Answer(_error_page(request, 400, text("bad_form"))) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


async def _writer(request: Request) -> tuple[Session, dict[str, str], Claim]:
    """The session and form of a post that may write: a writer's, with its CSRF token (else
    403), and the claim of the form on its key (else 400), before anything is done."""
    session = await _page(request)
    form = await _form(request)
    if not session.may_write:
        raise _Answer(_error_page(request, 403, text("reader"), session=session))
    if not _state(request).parts.sessions.csrf_ok(session, form.get(CSRF_FIELD)):
        raise _Answer(_error_page(request, 403, text("csrf"), session=session))
    claim = console.form_claim(
        _merchant(request).merchant_id,
        session.actor,
        request.url.path,
        form,
        datetime.now(UTC),
        ttl_s=_state(request).key_ttl_s,
    )
    if claim is None:
        raise _Answer(_error_page(request, 400, text("form_stale"), session=session))
    return session, form, claim


async def _once(
    request: Request,
    session: Session,
    claim: Claim,
    work: Callable[[Scope], Awaitable[T]],
    refused: Callable[[int, str], Awaitable[Response]],
) -> T:
    """Run a form's write at most once (idempotency.once, with the form's key): a second
    post of the form replays the first one's answer; the key with other fields, or a first
    post that stays in its write, is ``refused`` (status, message) with nothing done."""

    async def keyed(form: Keyed) -> T:
        return await work(_scope(request, form))

    try:
        _, answer = await idempotency.once_waiting(
            _store(request), claim, keyed, wait_s=FORM_WAIT_S
        )
    except idempotency.KeyReused:
        raise _Answer(await refused(422, text("form_reused"))) from None
    except idempotency.KeyInFlight:
        raise _Answer(await refused(409, text("form_in_flight"))) from None
    return answer


async def _page(request: Request) -> Session:
    """The session of a merchant's page, and the merchant it shows (``_merchant``): the one
    its URL names (``/console/merchants/{merchant_id}/…``), or, on a v1.2 URL, a merchant
    session's own and otherwise ``default``'s. A merchant's session on another merchant's
    URL, and any URL of a merchant not registered, is a 404 page."""
    session = _signed_in(request)
    named = request.path_params.get("merchant_id")
    if named is None:
        wanted = DEFAULT_MERCHANT if session.platform or session.name is None else session.merchant
        base = "/console"
    else:
        wanted, base = named, "/console/merchants/" + quote(named, safe="")
        mine = session.platform or session.name is None or named == session.merchant
        if not (is_merchant_id(named) and mine):
            _not_found(request, session, text("not_found_merchant"))
    merchant = await _store(request).merchant(wanted)
    if merchant is None:
        _not_found(request, session, text("not_found_merchant"))
    request.state.console_merchant = merchant
    request.state.console_base = base
    return session


def _merchant(request: Request) -> Merchant:
    merchant: Merchant = request.state.console_merchant
    return merchant


def _base(request: Request) -> str:
    """Where the links of the page's merchant begin: ``/console`` on a v1.2 URL."""
    return getattr(request.state, "console_base", "/console")


def _scope(request: Request, form: Keyed | None = None) -> Scope:
    """The scope of a page or a form's write: the page's merchant, the session's actor,
    and the form's key."""
    return Scope(_merchant(request).merchant_id, _session_of(request).actor, form)


def _session_of(request: Request) -> Session:
    session = _session(request)
    assert session is not None  # a page's session (``_page``)
    return session


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- rendering ---------------------------------------------------------------------------------


def _render(
    request: Request,
    template: str,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    parts = _state(request).parts
    base = _base(request)
    for name, empty in (("errors", {}), ("values", {}), ("error", None), ("notice", None)):
        context.setdefault(name, empty)
    html = _templates.get_template(template).render(
        session=session,
        csrf=parts.sessions.csrf_token(session) if session is not None else "",
        open_console=parts.sessions.open,
        path=request.url.path,
        merchant=getattr(request.state, "console_merchant", None),
        base=base,
        sku_url=lambda sku: base + "/skus/" + quote(sku, safe=""),
        order_url=lambda order_no: base + "/orders/" + quote(order_no, safe=""),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _error_page(
    request: Request, status: int, message: str, session: Session | None = None
) -> HTMLResponse:
    if session is None:
        session = _session(request)
    return _render(request, "error.html", session, status, code=status, message=message)


def _not_found(request: Request, session: Session, message: str) -> NoReturn:
    raise _Answer(_error_page(request, 404, message, session))


def _redirect(url: str) -> RedirectResponse:
    """303 to ``url``."""
    return RedirectResponse(url, status_code=303)


def _done(
    request: Request, session: Session, name: str, page: str | None = None, **values: str | int
) -> Response:
    """303 to ``page`` (by default the page posted to), which tells (once) the notice
    ``name``."""
    page = page or request.url.path
    notices = _state(request).parts.notices
    response = RedirectResponse(quote(page) + "#top", status_code=303)
    _cookie(
        request,
        response,
        NOTICE_COOKIE,
        notices.seal(session, page, name, **values),
        notices.max_age_s,
    )
    return response


def _take_notice(request: Request, session: Session) -> str | None:
    """The notice this page is to tell, if a write of this session just led here; its
    cookie goes with the answer (ConsoleRoute), so a reload tells nothing."""
    cookie = request.cookies.get(NOTICE_COOKIE)
    if cookie is None:
        return None
    request.state.console_notice_taken = True
    return _state(request).parts.notices.open(cookie, session, request.url.path)


# --- pages -------------------------------------------------------------------------------------


@own.get(STYLESHEET_PATH.removeprefix("/console"))
async def stylesheet() -> Response:
    """The console's one stylesheet, served by the app itself."""
    return Response(
        _STYLESHEET,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@own.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (field ``api_key``)."""
    if _state(request).parts.sessions.open:
        return _redirect("/console")
    session = _session(request)
    if session is not None and session.signed_in:
        return _redirect(console.safe_next(next))
    session = session or _start(request)
    notice = _take_notice(request, session)
    return _render(request, "login.html", session, next=console.safe_next(next), notice=notice)


@own.post("/login")
async def login(request: Request) -> Response:
    """Sign in with an API key: a session cookie that holds the key's name and role."""
    parts = _state(request).parts
    if parts.sessions.open:
        return _redirect("/console")
    address = _client_address(request)
    device = parts.sessions.device(request.cookies.get(DEVICE_COOKIE))
    form = await _form(request)
    target = console.safe_next(form.get("next"))

    def again(status: int, errors: FormErrors, message: str | None = None) -> HTMLResponse:
        session = _session(request) or _start(request)
        return _render(
            request, "login.html", session, status, next=target, errors=errors, error=message
        )

    wait = parts.limiter.retry_after(address, device)
    if wait is not None:
        response = again(429, {"api_key": text("sign_in_limited", seconds=wait)})
        response.headers["Retry-After"] = str(wait)
        return response
    session = _session(request)
    if session is None or not parts.sessions.csrf_ok(session, form.get(CSRF_FIELD)):
        return again(403, {}, text("csrf"))
    if not parts.signs_in:
        return again(503, {}, text("no_console_secret"))
    presented = form.get("api_key", "").strip()
    if not presented:
        return again(422, {"api_key": console.field_message("api_key", "missing", {})})
    caller = await parts.keyring.caller_of(presented, _store(request))
    if caller is None:
        parts.limiter.failed(address, device)
        wait = parts.limiter.retry_after(address, device)
        if wait is not None:
            response = again(429, {"api_key": text("sign_in_limited", seconds=wait)})
            response.headers["Retry-After"] = str(wait)
            return response
        return again(401, {"api_key": text("sign_in_failed")})
    if session.signed_in:  # signing in again: the session it replaces ends
        await parts.sessions.end(session, _store(request))
    _start(request, caller)  # a new session id at sign-in
    entered = _redirect(target)
    if device is not None or parts.limiter.may_issue(caller.name):
        value = parts.sessions.device_cookie(caller, device)
        _cookie(request, entered, DEVICE_COOKIE, value, console.DEVICE_LIFETIME_S, "/console/login")
    return entered


@own.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out: the session ends (on every worker), and the browser's cookie is replaced
    by a new session's, not signed in."""
    parts = _state(request).parts
    session = _session(request)
    if session is None or not session.signed_in or parts.sessions.open:
        return _redirect("/console" if parts.sessions.open else "/console/login")
    form = await _form(request)
    if not parts.sessions.csrf_ok(session, form.get(CSRF_FIELD)):
        return _error_page(request, 403, text("csrf"), session)
    await parts.sessions.end(session, _store(request))
    # The signed-out browser gets a new session, not signed in, whose sign-in page tells it.
    return _done(request, _start(request), "signed_out", page="/console/login")


@pages.get("")
async def home(request: Request, after: str | None = None) -> Response:
    """Open failures by mall, newest first, and the latest restock outcomes; for a platform
    session at ``/console``, every merchant with open failures."""
    if "merchant_id" not in request.path_params:
        session = _signed_in(request)
        if session.platform:
            return await _merchants_page(request, session, after)
    session = await _page(request)
    store, scope = _store(request), _scope(request)
    counts = await store.failure_counts(scope)
    by_mall = [
        (
            mall,
            counts.get(mall, 0),
            await store.restock_records(
                scope,
                status=RestockStatus.FAILED,
                mall=mall,
                after=None,
                limit=HOME_FAILURES_PER_MALL,
                newest_first=True,
            ),
        )
        for mall in Mall
        if counts.get(mall, 0)
    ]
    recent = await store.restock_records(
        scope, status=None, mall=None, after=None, limit=HOME_RECENT, newest_first=True
    )
    return _render(
        request,
        "home.html",
        session,
        by_mall=by_mall,
        total=sum(counts.values()),
        recent=recent,
    )


@pages.get("/failures")
async def failures(
    request: Request, mall: str | None = None, cursor: str | None = None
) -> Response:
    """Every failed, unresolved restock, newest first, a page at a time."""
    session = await _page(request)
    chosen: Mall | None = None
    after: tuple[datetime, str] | None = None
    try:
        chosen = Mall(mall) if mall else None
        if cursor:
            after = cursors.decode(cursor, FAILURES_CURSOR, (datetime, str), param="cursor")
    except (ValueError, InvalidRequest):
        return _error_page(request, 400, text("bad_query"), session)
    records = await _store(request).restock_records(
        _scope(request),
        status=RestockStatus.FAILED, mall=chosen, after=after, limit=PAGE_SIZE + 1,
        newest_first=True,
    )  # fmt: skip
    page = records[:PAGE_SIZE]
    next_url = None
    if len(records) > PAGE_SIZE:
        last = page[-1]
        query = {"cursor": cursors.encode(FAILURES_CURSOR, last.requested_at, last.order_no)}
        if chosen:
            query = {"mall": chosen.value, **query}
        next_url = _base(request) + "/failures?" + urlencode(query)
    return _render(
        request,
        "failures.html",
        session,
        records=page,
        mall=chosen,
        next_url=next_url,
        first_page=cursor is None,
    )


async def _merchants_page(request: Request, session: Session, after: str | None) -> Response:
    """A platform session's home: the merchants with open failures, by merchant_id, a page
    at a time (``after``: the last merchant of the page before)."""
    if after is not None and not is_merchant_id(after):
        return _error_page(request, 400, text("bad_query"), session)
    found = await _store(request).failures_by_merchant(after, MERCHANTS_PER_PAGE + 1)
    page = found[:MERCHANTS_PER_PAGE]
    next_url = None
    if len(found) > MERCHANTS_PER_PAGE:
        next_url = "/console?" + urlencode({"after": page[-1][0].merchant_id})
    rows = [
        (merchant, "/console/merchants/" + quote(merchant.merchant_id, safe=""), counts)
        for merchant, counts in page
    ]
    return _render(
        request,
        "merchants.html",
        session,
        rows=rows,
        next_url=next_url,
        first_page=after is None,
        default_url="/console/merchants/" + DEFAULT_MERCHANT,
    )


async def _order_page(
    request: Request,
    session: Session,
    order_no: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    store = _store(request)
    scope = _scope(request)
    record = await store.restock_record(scope, order_no)
    sync = await store.sync_execution(scope, order_no)
    movements = await store.order_movements(scope, order_no)
    skus = [line.sku for line in record.items] if record else []
    quantities = await store.quantities(scope, skus) if skus else {}
    story = console.order_story(order_no, record, sync, movements, quantities)
    if not story.exists:
        _not_found(request, session, text("not_found_order"))
    return _render(
        request,
        "order.html",
        session,
        status,
        story=story,
        default_reason=console.DEFAULT_ADJUSTMENT_REASON,
        **context,
    )


@pages.get("/orders/{order_no}")
async def order(request: Request, order_no: str) -> Response:
    """An order's whole story; a writer adjusts its skus and marks it resolved here."""
    session = await _page(request)
    if not _ORDER_NO.fullmatch(order_no):
        _not_found(request, session, text("not_found_order"))
    notice = _take_notice(request, session)
    return await _order_page(request, session, order_no, notice=notice)


@pages.post("/orders/{order_no}")
async def order_action(request: Request, order_no: str) -> Response:
    """Mark the order's failed restock resolved (``note``), or adjust one of its skus
    (``sku``, ``delta``, ``reason``, ``order_no``); each form applies once (``form_key``)."""
    session, form, claim = await _writer(request)
    if not _ORDER_NO.fullmatch(order_no):
        _not_found(request, session, text("not_found_order"))
    if "sku" in form:
        return await _adjust_from_order(request, session, order_no, form, claim)
    resolved_by = form.get("resolved_by", "").strip() or (session.name or "")
    values = {"resolve": {"note": form.get("note", ""), "resolved_by": resolved_by}}

    async def refused(status: int, message: str) -> Response:
        return await _order_page(request, session, order_no, status, error=message)

    try:
        body = ResolutionIn.model_validate(
            {"note": form.get("note", "").strip(), "resolved_by": resolved_by}
        )
        await _once(
            request,
            session,
            claim,
            lambda scope: restock.resolve_restock(
                _store(request), scope, order_no, body, scope.now()
            ),
            refused,
        )
    except ValidationError as exc:
        errors = {"resolve": console.validation_errors(exc)}
        return await _order_page(request, session, order_no, 422, errors=errors, values=values)
    except NotFound:
        return await _order_page(
            request, session, order_no, 404, error=text("no_record"), values=values
        )
    except Conflict:
        record = await _store(request).restock_record(_scope(request), order_no)
        status = console.STATUS_LABEL[record.status] if record else ""
        return await _order_page(
            request, session, order_no, 409, error=text("not_failed", status=status), values=values
        )
    return _done(request, session, "resolved")


async def _adjust_from_order(
    request: Request, session: Session, order_no: str, form: Mapping[str, str], claim: Claim
) -> Response:
    sku = form.get("sku", "")

    async def refused(status: int, message: str) -> Response:
        return await _order_page(request, session, order_no, status, error=message)

    outcome = await _adjust(request, session, sku, form, claim, refused)
    if isinstance(outcome, dict):
        status = 404 if "sku" in outcome else 422
        return await _order_page(
            request,
            session,
            order_no,
            status,
            errors={f"adjust:{sku}": outcome},
            values={f"adjust:{sku}": dict(form)},
        )
    delta, quantity = outcome
    return _done(request, session, "adjusted", sku=sku, delta=delta, quantity=quantity)


async def _adjust(
    request: Request,
    session: Session,
    sku: str,
    form: Mapping[str, str],
    claim: Claim,
    refused: Callable[[int, str], Awaitable[Response]],
) -> tuple[int, int] | FormErrors:
    """Adjust ``sku`` through stock.adjust_stock, once for the form: (delta, quantity
    after), or the refusal by form field (``sku`` for a sku that is not registered)."""
    if not _SKU.fullmatch(sku):
        return {"sku": text("sku_not_registered")}
    try:
        body = AdjustmentIn.model_validate(console.adjustment_body(form))
        result = await _once(
            request,
            session,
            claim,
            lambda scope: stock.adjust_stock(_store(request), scope, sku, body, scope.now()),
            refused,
        )
    except ValidationError as exc:
        return console.validation_errors(exc)
    except InvalidRequest as exc:
        return console.problem_errors(exc.problems)
    except NotFound:
        return {"sku": text("sku_not_registered")}
    return body.delta, result.quantity


async def _sku_page(
    request: Request,
    session: Session,
    sku: str,
    cursor: str | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    store = _store(request)
    try:
        movements = await stock.list_movements(
            store, _scope(request), sku, limit=PAGE_SIZE, cursor=cursor
        )
    except NotFound:
        _not_found(request, session, text("not_found_sku"))
    except InvalidRequest:
        raise _Answer(_error_page(request, 400, text("bad_query"), session)) from None
    current = await store.stock(_scope(request), sku)
    next_url = None
    if movements.next_cursor:
        next_url = (
            _base(request)
            + "/skus/"
            + quote(sku, safe="")
            + "?"
            + urlencode({"cursor": movements.next_cursor})
        )
    return _render(
        request,
        "sku.html",
        session,
        status,
        sku=sku,
        current=current,
        movements=movements.items,
        next_url=next_url,
        first_page=cursor is None,
        **context,
    )


@pages.get("/skus/{sku}")
async def sku_page(request: Request, sku: str, cursor: str | None = None) -> Response:
    """A sku's quantity and its ledger, a page at a time; a writer adjusts it here."""
    session = await _page(request)
    if not _SKU.fullmatch(sku):
        _not_found(request, session, text("not_found_sku"))
    notice = _take_notice(request, session)
    return await _sku_page(request, session, sku, cursor, notice=notice)


@pages.post("/skus/{sku}")
async def sku_adjust(request: Request, sku: str) -> Response:
    """The manual adjustment (``delta``, ``reason``, optional ``order_no``), applied once
    for the form (``form_key``)."""
    session, form, claim = await _writer(request)
    if not _SKU.fullmatch(sku):
        _not_found(request, session, text("not_found_sku"))

    async def refused(status: int, message: str) -> Response:
        return await _sku_page(request, session, sku, None, status, error=message)

    outcome = await _adjust(request, session, sku, form, claim, refused)
    if isinstance(outcome, dict):
        status = 404 if "sku" in outcome else 422
        return await _sku_page(request, session, sku, None, status, errors=outcome, values=form)
    delta, quantity = outcome
    return _done(request, session, "adjusted", sku=sku, delta=delta, quantity=quantity)


rest = APIRouter(prefix="/console", route_class=ConsoleRoute)


@rest.get("/{rest:path}")
async def unknown(request: Request, rest: str) -> Response:
    """Any other console address."""
    if not rest:
        return _redirect("/console")
    session = _signed_in(request)
    return _error_page(request, 404, text("not_found_page"), session)


router = APIRouter(include_in_schema=False)
router.include_router(own)
# A merchant's pages, at the v1.2 URLs and under the merchant's own (contract v1.3).
router.include_router(pages, prefix="/console")
router.include_router(pages, prefix=MERCHANT_PAGES)
router.include_router(rest)


def install_state(app_state: Any, parts: Console, retry_after_s: int, key_ttl_s: int) -> None:
    """Keep the console's parts on the app, for its routes."""
    app_state.console = ConsoleState(parts, retry_after_s, key_ttl_s)
