"""Pure ASGI middleware: request ids, API keys and the body limit, before any parsing."""

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from restock_service.access import ApiKeys, allows
from restock_service.api.errors import problem_response
from restock_service.logs import request_id_var
from restock_service.metrics import Metrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[!-~]{1,128}")
OPEN_PATHS = frozenset(
    {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


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


class RequestId:
    """Take the caller's X-Request-ID (or make one), log under it, and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, REQUEST_ID_HEADER)
        request_id = given.decode() if given and _REQUEST_ID.fullmatch(given) else new_request_id()
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A defect, not an input. Answer here, inside, so the 500 carries the request
            # id and the one error shape; past a started response there is nothing to say.
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            await problem_response(500, "unexpected error")(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class RequireKey:
    """With keys configured: 401 without a valid bearer key, 403 for a reader that writes."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        scheme, _, presented = (header(scope, b"authorization") or b"").partition(b" ")
        role = None
        if scheme.lower() == b"bearer":
            try:
                role = self.keys.role_of(presented.strip().decode("utf-8"))
            except UnicodeDecodeError:
                role = None
        if role is None:
            response = problem_response(
                401,
                "send a valid key as `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif not allows(role, scope["method"]):
            response = problem_response(403, f"a {role} key cannot {scope['method']}")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class LimitBody:
    """Answer 413 for a body over ``limit`` bytes before anything parses it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            await problem_response(400, "Content-Length is not a number")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:  # buffer at most `limit` bytes, however the body is framed
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        await self.app(scope, replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, f"the request body is over {self.limit} bytes")
        await response(scope, receive, send)


class Timing:
    """Count and time every request by its route template (``unmatched`` before routing)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
