"""One mechanism for every route: FastAPI's own handling, with a short way through for
requests that are valid.

FastAPI's request handler is general: it solves a tree of dependencies, parses a JSON body
into Python objects and validates them in a second step, and validates a response model
again before it serializes it. For a request that is valid, ``FastRoute`` does the same
work directly, planned once per route at start-up:

- path and query parameters are validated by the route's own fields (FastAPI's);
- a JSON body is parsed and validated in one step by pydantic-core (``model_validate_json``);
- dependencies that only take the request (``api/deps.py``) are called with it;
- the endpoint's return value is serialized once, by the response model's serializer.

``ShortWay``, innermost behind the gates, routes such a request itself, as Starlette's
router would, and so also skips Starlette's routing and exception layers. Anything else (a
parameter or body that does not validate, a content type other than JSON, a dependency of
another kind) goes on to FastAPI's handler, which stays the reference for every error and
for the OpenAPI document. ``create_app(fast_routes=False)`` leaves every request to it;
tests/test_routing.py checks that both answer alike.
"""

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.status import HTTP_204_NO_CONTENT

from restock_service.api.bodies import is_json
from restock_service.api.errors import problem_for
from restock_service.api.middleware import ASGIApp, Receive, Scope, Send, replay

_ABSENT = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a valid request to one route needs, found once from its declaration."""

    path: tuple[Any, ...]  # FastAPI's ModelFields
    query: tuple[Any, ...]
    body: type[BaseModel] | None
    body_name: str | None
    dependencies: tuple[tuple[str, Callable[[Request], Awaitable[Any]]], ...]


def _plan(route: APIRoute) -> _Plan | None:
    """The plan for ``route``, or None when its requests need FastAPI's general handling."""
    dependant = route.dependant
    if (
        not inspect.iscoroutinefunction(route.endpoint)
        or dependant.header_params
        or dependant.cookie_params
        or dependant.request_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or len(dependant.body_params) > 1
        or (not route.response_field and route.status_code != HTTP_204_NO_CONTENT)
    ):
        return None
    body: type[BaseModel] | None = None
    body_name = None
    if dependant.body_params:
        (field,) = dependant.body_params
        annotation = field.field_info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        body, body_name = annotation, field.name
    dependencies = []
    for dependency in dependant.dependencies:
        call = _request_only(dependency)
        if call is None or dependency.name is None:
            return None
        dependencies.append((dependency.name, call))
    return _Plan(
        tuple(dependant.path_params), tuple(dependant.query_params), body, body_name,
        tuple(dependencies),
    )  # fmt: skip


def _request_only(dependency: Dependant) -> Callable[[Request], Awaitable[Any]] | None:
    """The dependency's coroutine function, when the request is all that it takes."""
    if (
        dependency.path_params
        or dependency.query_params
        or dependency.header_params
        or dependency.cookie_params
        or dependency.body_params
        or dependency.dependencies
        or not dependency.request_param_name
        or not inspect.iscoroutinefunction(dependency.call)
    ):
        return None
    call: Callable[[Request], Awaitable[Any]] | None = dependency.call
    return call


class FastRoute(APIRoute):
    """An APIRoute that can also answer a valid request directly (see ``ShortWay``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.plan = _plan(self)

    async def answer(self, request: Request) -> Response | None:
        """The answer to a valid request; None when FastAPI's handler must answer it."""
        if self.plan is None:
            return None
        values = await _values(self.plan, request)
        if values is None:
            return None
        result = await self.endpoint(**values)
        if isinstance(result, Response):
            return result
        if self.response_field is None:  # a 204 route
            return Response(status_code=self.status_code or HTTP_204_NO_CONTENT)
        return Response(
            self.response_field.serialize_json(result),
            status_code=self.status_code or 200,
            media_type="application/json",
        )


class ShortWay:
    """Pure ASGI, innermost behind the gates: finds the FastRoute a request is for, as
    Starlette's router would, and has it answer; hands the request, body and all, to
    FastAPI when it does not (or when ``enabled`` is False)."""

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], enabled: bool, retry_after_s: int
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.retry_after_s = retry_after_s
        self.routes: dict[str, list[FastRoute]] = {}
        for route in routes:
            if isinstance(route, FastRoute) and route.plan is not None:
                for method in (route.methods or set()) - {"HEAD"}:
                    self.routes.setdefault(method, []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        for route in self.routes.get(scope["method"], ()):
            match = route.path_regex.match(path)
            if match is None:
                continue
            scope["route"] = route
            scope["path_params"] = {
                name: route.param_convertors[name].convert(value)
                for name, value in match.groupdict().items()
            }
            request = Request(scope, receive, send)
            try:
                response = await route.answer(request)
            except Exception as exc:
                response = problem_for(exc, scope["method"], scope["path"], self.retry_after_s)
                if response is None:
                    raise
            if response is None:  # FastAPI answers it, with the reference error
                body = getattr(request, "_body", None)
                await self.app(scope, receive if body is None else replay(body, receive), send)
                return
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path that Starlette routes on: ``path`` without a leading ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


async def _values(plan: _Plan, request: Request) -> dict[str, Any] | None:
    """The endpoint's arguments for a valid request; None at the first thing that is not."""
    values: dict[str, Any] = {}
    path = request.path_params
    for field in plan.path:
        value, errors = field.validate(path.get(field.alias))
        if errors:
            return None
        values[field.name] = value
    query = request.query_params
    for field in plan.query:
        raw = query.get(field.alias, _ABSENT)
        if raw is _ABSENT:
            if field.field_info.is_required():
                return None
            values[field.name] = field.get_default()
            continue
        value, errors = field.validate(raw)
        if errors:
            return None
        values[field.name] = value
    if plan.body is not None and plan.body_name is not None:
        body = await request.body()
        if not body or not is_json(request.headers.get("content-type")):
            return None
        try:
            values[plan.body_name] = plan.body.model_validate_json(body)
        except ValidationError:
            return None
    for name, call in plan.dependencies:
        values[name] = await call(request)
    return values
