"""One place that turns every error into an RFC 9457 problem document."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from restock_service.api.bodies import NOT_UTF8
from restock_service.errors import DomainError, InvalidRequest, field_path
from restock_service.faults import DATABASE_ERRORS, is_database_unavailable, pooler_fault
from restock_service.schemas import Problem, ProblemField

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_INPUT_ECHO = 200


# RFC 9110 reason phrases, used as the problem title.
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_response(
    status: int,
    detail: str,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _echo(value: Any) -> Any:
    """The offending value, when it is a small scalar that JSON can carry back."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a lone surrogate ("\ud800") parses but cannot be sent
        except UnicodeEncodeError:
            return None
        return value if len(value) <= MAX_INPUT_ECHO else value[:MAX_INPUT_ECHO] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN, Infinity, 1e400
    if value is None or isinstance(value, bool | int):
        return value
    return None


def _validation_fields(errors: list[dict[str, Any]]) -> list[ProblemField]:
    fields = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        location, rest = (str(loc[0]), loc[1:]) if loc else ("body", ())
        if error.get("type") == "json_invalid":  # loc holds a character offset, not a field
            rest = ()
        fields.append(
            ProblemField(
                field=field_path(rest) or location,
                location=location,
                message=str(error.get("msg", "is invalid")),
                type=str(error.get("type", "value_error")),
                input=_echo(error.get("input")),
            )
        )
    return fields


def _summary(fields: list[ProblemField]) -> str:
    return "; ".join(f"{f.field}: {f.message}" for f in fields)


def domain_problem(exc: DomainError) -> JSONResponse:
    """A rule's refusal (invalid request, not found, conflict) as its problem document."""
    fields = None
    if isinstance(exc, InvalidRequest):
        fields = [
            ProblemField(
                field=field_path(p.loc),
                location=p.location,
                message=p.message,
                type=p.type,
                input=_echo(p.input),
            )
            for p in exc.problems
        ]
    return problem_response(exc.status, exc.detail, fields, headers=dict(exc.headers) or None)


def unavailable(exc: Exception, method: str, path: str) -> bool:
    """Log what the database raised on ``method path``, and tell whether the request is
    answered 503 with Retry-After: the database is out of reach, or a pooler in transaction
    mode lost a named statement (a setting the operator must change: logged at ERROR). Any
    other failure is a defect, logged with its traceback."""
    pooler = pooler_fault(exc)
    if pooler is not None:
        log.error("database unusable on %s %s: %s", method, path, pooler)
    elif is_database_unavailable(exc):
        log.warning("database unavailable on %s %s: %r", method, path, exc)
    else:
        log.error("database error on %s %s", method, path, exc_info=exc)
        return False
    return True


def database_problem(exc: Exception, method: str, path: str, retry_after_s: int) -> JSONResponse:
    """503 with Retry-After when the request may be sent again later; 500 otherwise."""
    if not unavailable(exc, method, path):
        return problem_response(500, "unexpected database error")
    return problem_response(
        503,
        "the database cannot be reached; the request took effect wholly or not at "
        "all, so send it again later",
        headers={"Retry-After": str(retry_after_s)},
    )


def problem_for(exc: Exception, method: str, path: str, retry_after_s: int) -> JSONResponse | None:
    """The answer to a service's exception: a rule's refusal or database trouble; None for
    anything else, which is a defect."""
    if isinstance(exc, DomainError):
        return domain_problem(exc)
    if isinstance(exc, DATABASE_ERRORS):
        return database_problem(exc, method, path, retry_after_s)
    return None


def install(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _validation_fields(list(exc.errors()))
        return problem_response(422, _summary(fields), fields)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's only 400: a body it could not decode (not UTF-8). That is broken
            # JSON, which the contract answers with a 422 naming the body.
            return domain_problem(InvalidRequest([NOT_UTF8]))
        return problem_response(
            exc.status_code,
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def _service(request: Request, exc: Exception) -> JSONResponse:
        response = problem_for(exc, request.method, request.url.path, retry_after_s)
        if response is None:  # not registered for anything else
            raise exc
        return response

    # Registered per class, so Starlette answers these without re-raising them.
    service_errors: tuple[type[Exception], ...] = (DomainError, *DATABASE_ERRORS)
    for exc_class in service_errors:
        app.add_exception_handler(exc_class, _service)

    # Any other exception is a defect: middleware.Gate answers it with a 500 problem.
