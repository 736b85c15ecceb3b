"""One route class for every route: FastAPI's own handling, with a short way through for
requests that are valid.

FastAPI's request handler is general: it solves a tree of dependencies, parses a JSON body
into Python objects and validates them in a second step, and validates a response model
again before it serializes it. For a request that is valid, ``FastRoute`` does the same
work directly, planned once per route at start-up:

- path and query parameters are validated by the route's own fields (FastAPI's);
- a JSON body is parsed and validated in one step by pydantic-core (``model_validate_json``);
- dependencies that only take the request (``api/deps.py``) are called with it;
- the endpoint's return value is serialized once, by the response model's serializer.

Anything else (a parameter or body that does not validate, a content type other than
JSON, a dependency of another kind) goes to FastAPI's handler, which stays the reference
for every error and for the OpenAPI document. ``create_app(fast_routes=False)`` leaves
every request to it; tests/test_routing.py checks that both answer alike.
"""

import email.message
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.status import HTTP_204_NO_CONTENT

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
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
    def get_route_handler(self) -> Handler:
        reference: Handler = super().get_route_handler()
        plan = _plan(self)
        if plan is None:
            return reference
        endpoint = self.endpoint
        response_field = self.response_field
        status_code = self.status_code or 200

        async def handler(request: Request) -> Response:
            values = await _values(plan, request) if request.app.state.fast_routes else None
            if values is None:  # FastAPI answers it, with the reference error
                return await reference(request)
            result = await endpoint(**values)
            if isinstance(result, Response):
                return result
            if response_field is None:  # a 204 route
                return Response(status_code=status_code)
            return Response(
                response_field.serialize_json(result),
                status_code=status_code,
                media_type="application/json",
            )

        return handler


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
        if not body or not _is_json(request.headers.get("content-type")):
            return None
        try:
            values[plan.body_name] = plan.body.model_validate_json(body)
        except ValidationError:
            return None
    for name, call in plan.dependencies:
        values[name] = await call(request)
    return values


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: no content type, or application/json or application/*+json, as the
    email package parses it (a malformed type counts as text/plain)."""
    if content_type is None or content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
