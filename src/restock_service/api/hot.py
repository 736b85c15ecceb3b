"""The two busiest routes, answered without FastAPI's per-request machinery.

``POST /restocks`` (the order system) and ``GET /restocks/{order_no}`` (operators) carry the
load. For them, FastAPI's routing, dependency resolution and two-step body validation cost
about as much Python as the restock itself, so this pure-ASGI layer, innermost behind the
request id, the key check and the body limit, answers them directly: one pydantic-core
parse of the body, then the same service call and the same answer as the FastAPI routes in
restocks.py (``restocks_response``, ``record_response``).

It only answers what it can answer exactly as FastAPI would: a body that validates, a path
that matches the pattern. Everything else, invalid input included, goes on to FastAPI, whose
routes stay the reference and the OpenAPI document. tests/test_hot_paths.py checks that the
two answer alike.
"""

import email.message
import re
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.responses import Response

from restock_service.api.errors import DATABASE_ERRORS, database_problem, domain_problem
from restock_service.api.middleware import ASGIApp, Receive, Scope, Send, header, replay
from restock_service.api.restocks import record_response, restocks_response
from restock_service.errors import DomainError
from restock_service.schemas import ORDER_NO_PATTERN, RestockRequest

COLLECTION = "/restocks"
RECORD_PREFIX = "/restocks/"
_ORDER_NO = re.compile(ORDER_NO_PATTERN)


class _Template:
    """What metrics.Timing reads from ``scope["route"]``: the route template."""

    def __init__(self, path: str) -> None:
        self.path = path


_COLLECTION_ROUTE = _Template(COLLECTION)
_RECORD_ROUTE = _Template("/restocks/{order_no}")


class HotPaths:
    def __init__(self, app: ASGIApp, retry_after_s: int) -> None:
        self.app = app
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = _route_path(scope)
            method = scope["method"]
            if method == "POST" and path == COLLECTION:
                await self._create(scope, receive, send)
                return
            if method == "GET" and path.startswith(RECORD_PREFIX):
                order_no = path[len(RECORD_PREFIX) :]
                if _ORDER_NO.fullmatch(order_no):  # else FastAPI answers 422 or 404
                    scope["route"] = _RECORD_ROUTE
                    state = scope["app"].state
                    await self._answer(
                        scope, receive, send, lambda: record_response(state.db, order_no)
                    )
                    return
        await self.app(scope, receive, send)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()  # LimitBody, outside, hands over the whole body at once
        if message["type"] != "http.request":
            return
        body: bytes = message.get("body", b"")
        request = _parse(scope, body)
        if request is None:  # FastAPI answers it, with the reference 422
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = _COLLECTION_ROUTE
        state = scope["app"].state
        await self._answer(
            scope, receive, send, lambda: restocks_response(state.db, state.metrics, request)
        )

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        respond: Callable[[], Awaitable[Response]],
    ) -> None:
        response: Response
        try:
            response = await respond()
        except DomainError as exc:
            response = domain_problem(exc)
        except DATABASE_ERRORS as exc:
            response = database_problem(exc, scope["method"], scope["path"], self.retry_after_s)
        await response(scope, receive, send)


def _parse(scope: Scope, body: bytes) -> RestockRequest | None:
    """The request, when FastAPI would read the body as JSON and it validates; else None."""
    if not body or not _is_json(header(scope, b"content-type")):
        return None
    try:
        return RestockRequest.model_validate_json(body)
    except ValidationError:
        return None


def _is_json(content_type: bytes | None) -> bool:
    """FastAPI's test: no content type, or application/json or application/*+json, as the
    email package parses it (a malformed type counts as text/plain)."""
    if content_type is None or content_type == b"application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _route_path(scope: Scope) -> str:
    """The path that Starlette routes on: ``path`` without a leading ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
