"""Liveness and readiness."""

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from restock_service.api.deps import DB, AppMetrics, problems
from restock_service.api.errors import problem_response
from restock_service.api.routing import FastRoute
from restock_service.faults import pooler_fault
from restock_service.migrations import schema_mismatch
from restock_service.schemas import Problem

log = logging.getLogger(__name__)
router = APIRouter(tags=["service"], route_class=FastRoute)


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    schema_revision: str


@router.get("/health", operation_id="getHealth")
async def health() -> Health:
    """Answer while the process runs."""
    return Health(status="ok")


@router.get(
    "/ready",
    operation_id="getReady",
    responses={
        503: {
            "model": Problem,
            "description": "Database unreachable, schema behind, or the process is stopping.",
        }
    },
    response_model=Ready,
)
async def ready(request: Request, db: DB) -> Ready | JSONResponse:
    """Answer 200 when the database answers and its schema is current, and 503 once the
    process has been told to stop (SIGTERM)."""
    retry_after = {"Retry-After": str(db.settings.retry_after_s)}
    if request.app.state.drain.draining:
        return problem_response(503, "the process is stopping (SIGTERM)", headers=retry_after)
    try:
        revision = await db.schema_revision()
    except Exception as exc:  # any failure to ask means "not ready"
        pooler = pooler_fault(exc)
        log.warning("readiness check failed: %s", pooler or repr(exc))
        detail = pooler or "the database cannot be reached"
        return problem_response(503, detail, headers=retry_after)
    mismatch = schema_mismatch(revision)
    if mismatch is not None:
        log.warning("not ready: %s", mismatch)
        return problem_response(503, mismatch, headers=retry_after)
    return Ready(status="ready", schema_revision=revision or "")


@router.get(
    "/metrics",
    operation_id="getMetrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
        **problems(),
    },
)
async def metrics(metrics: AppMetrics) -> Response:
    """Expose this process's metrics in the Prometheus text format."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
