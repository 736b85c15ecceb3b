"""The gate in front of routing (pure ASGI): request ids, timing, API keys and the body
limit, before any parsing."""

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import Response

from restock_service import merchants
from restock_service.access import Caller, Role, allows
from restock_service.api import bodies
from restock_service.api.errors import domain_problem, problem_for, problem_response
from restock_service.drain import Drain
from restock_service.errors import InvalidRequest, Unauthenticated
from restock_service.fair_share import FairShare, TooManyAtOnce
from restock_service.keys import Keyring
from restock_service.logs import request_id_var
from restock_service.metrics import Metrics
from restock_service.tables import DEFAULT_MERCHANT, PLATFORM

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
CONSOLE = "/console"
CALLER = "restock.caller"  # the scope's key for the access.Caller of a request
MERCHANT = "restock.merchant"  # … for the merchant_id the request is for
KEYED = "restock.keyed"  # … for its idempotency.Keyed write (api/idempotent.py)
SHARED = "restock.shared"  # … true when it is served in one of its merchant's places
_REQUEST_ID = re.compile(rb"[!-~]{1,128}")
OPEN_PATHS = frozenset(
    {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
METRICS = "/metrics"
MERCHANTS = "/merchants"  # the platform's calls that manage merchants and their keys
_MERCHANT_HEADER = merchants.HEADER.lower().encode()


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` (already read) first, then the real one."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class _RequestIds:
    """Ids as unique as ``uuid4().hex`` (32 hex digits) without a getrandom call per request:
    a random prefix per process, then a counter."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_request_id = _RequestIds()
os.register_at_fork(after_in_child=new_request_id.restart)  # a forked worker gets its own


def _content_type(scope: Scope) -> str | None:
    raw = header(scope, b"content-type")
    return raw.decode("latin-1") if raw is not None else None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def merchant_data(path: str) -> bool:
    """Whether ``path`` reads or writes a merchant's data: all but the service's own paths,
    the console (which signs its users in) and the platform's calls on merchants."""
    return not (path in OPEN_PATHS or path == METRICS or _console(path) or _under(path, MERCHANTS))


def _console(path: str) -> bool:
    """The console's pages, which check their own signed-in session instead of a bearer key."""
    return _under(path, CONSOLE)


class Gate:
    """What every request passes before routing, in one pure ASGI layer, in this order:

    1. its request id: the caller's X-Request-ID when it is sane, or a new one; every log
       line of the request carries it, and the answer echoes it;
    2. its timing: counted and timed by route template (``unmatched`` before routing);
    3. the key check, with keys configured: 401 without a valid bearer key, 403 for a
       reader that writes; the caller is noted in the scope (not for the console's pages,
       which sign their users in);
    4. the merchant the request is for, by its key or its ``Merchant-Id`` (merchants.py),
       noted in the scope: 400, 403 or 404 when there is none; the platform's calls on
       merchants and keys (``/merchants``) need a platform admin key (403);
    5. the body limit: 413 for a body over ``limit`` bytes, before anything parses it, and
       408 for a body that has not arrived within ``body_timeout_s``;
    6. a JSON body that is not UTF-8, or gives a key twice in one object: 422 naming it
       (api/bodies.py), before either way of answering reads it;
    7. a call on a merchant's data is served in one of its merchant's places in this
       process, or answered 429 (fair_share.py).

    While the process drains after SIGTERM, every answer closes its connection.

    One layer, not four nested ones: each layer costs every request a coroutine and a
    wrapped ``send``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: Keyring,
        limit: int,
        metrics: Metrics,
        drain: Drain,
        body_timeout_s: float,
        retry_after_s: int,
        share: FairShare,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.known = merchants.KnownMerchants()
        self.retry_after_s = retry_after_s
        self.share = share
        self.limit = limit
        self.metrics = metrics
        self.drain = drain
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        given = header(scope, REQUEST_ID_HEADER)
        request_id = given.decode() if given and _REQUEST_ID.fullmatch(given) else new_request_id()
        token = request_id_var.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
                if self.drain.draining:  # the client goes elsewhere for its next request
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        scope[MERCHANT] = DEFAULT_MERCHANT
        try:
            refusal = await self._refusal(scope) or await self._merchant(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            body = await self._body(receive)
            if body is None:  # the client left
                return
            if isinstance(body, Response):
                await body(scope, receive, send_with_id)
                return
            if body and bodies.is_json(_content_type(scope)):
                problem = bodies.problem(body)
                if problem is not None:
                    await domain_problem(InvalidRequest([problem]))(scope, receive, send_with_id)
                    return
            if scope.get(SHARED):
                await self._shared(scope, replay(body, receive), send_with_id)
            else:
                await self.app(scope, replay(body, receive), send_with_id)
        except Exception:
            # A defect, not an input. Answer here, inside, so the 500 carries the request
            # id and the one error shape; past a started response there is nothing to say.
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if status:
                raise
            await problem_response(500, "unexpected error")(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status or 500, time.perf_counter() - began)
            request_id_var.reset(token)

    async def _refusal(self, scope: Scope) -> Response | None:
        """The answer that refuses the request from its headers alone, if any. A caller
        with a valid key is noted in the scope (``CALLER``)."""
        path: str = scope["path"]
        if path not in OPEN_PATHS and not _console(path):
            try:
                caller = await self._caller(scope)
            except Exception as exc:  # no valid key, or the database out of reach (503)
                response = problem_for(exc, scope["method"], path, self.retry_after_s)
                if response is None:
                    raise
                return response
            if caller is not None:
                if not allows(caller.role, scope["method"]):
                    return problem_response(403, f"a {caller.role} key cannot {scope['method']}")
                scope[CALLER] = caller
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            return problem_response(400, "Content-Length is not a number")
        if declared is not None and int(declared) > self.limit:
            return self._too_large()
        return None

    async def _caller(self, scope: Scope) -> Caller | None:
        """Who holds the request's bearer key (keys.py), None when no key is needed; raises
        Unauthenticated for a missing or unknown key."""
        store = scope["app"].state.store
        if not await self.keyring.enabled(store):
            return None
        scheme, _, presented = (header(scope, b"authorization") or b"").partition(b" ")
        try:
            key = presented.strip().decode("utf-8")
        except UnicodeDecodeError:
            key = ""
        caller = (
            await self.keyring.caller_of(key, store)
            if scheme.lower() == b"bearer" and key
            else None
        )
        if caller is None:
            raise Unauthenticated()
        return caller

    async def _shared(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request in one of its merchant's places (fair_share.py), or answer 429
        when none frees in time, having done nothing."""
        merchant = scope[MERCHANT]
        try:
            await self.share.enter(merchant)
        except TooManyAtOnce as exc:
            await domain_problem(exc)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.share.leave(merchant)

    async def _merchant(self, scope: Scope) -> Response | None:
        """Note the merchant the request is for (contract v1.3), or the answer that refuses
        it. What is no merchant's (the service's own paths, the console, which signs its
        users in) stays ``default``'s; the platform's calls on merchants are PLATFORM's."""
        path: str = scope["path"]
        caller: Caller | None = scope.get(CALLER)
        if _under(path, MERCHANTS):
            if caller is not None and not (caller.platform and caller.role is Role.ADMIN):
                return problem_response(403, "only a platform admin key manages merchants")
            scope[MERCHANT] = PLATFORM
            return None
        if not merchant_data(path):
            return None
        try:
            given = [value for name, value in scope["headers"] if name == _MERCHANT_HEADER]
            wanted = merchants.wanted(caller, given)
            if wanted.named:
                lookup = scope["app"].state.store.merchant
                if not await self.known.exists(wanted.merchant_id, lookup):
                    raise merchants.NoSuchMerchant(wanted.merchant_id)
        except Exception as exc:  # a refusal, or the database out of reach (503)
            response = problem_for(exc, scope["method"], path, self.retry_after_s)
            if response is None:
                raise
            return response
        scope[MERCHANT] = wanted.merchant_id
        scope[SHARED] = True
        return None

    async def _body(self, receive: Receive) -> bytes | Response | None:
        """The whole body, buffering at most ``limit`` bytes however it is framed; a 413
        past that, a 408 when it is not all there within ``body_timeout_s``; None when the
        client disconnects first."""
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    if len(body) > self.limit:
                        return self._too_large()
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            return problem_response(
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                headers={"Connection": "close"},
            )

    def _too_large(self) -> Response:
        return problem_response(413, f"the request body is over {self.limit} bytes")
