"""The HTTP layer: it translates between HTTP and the services, and holds no rules."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from restock_service import __version__, idempotency
from restock_service import merchants as merchant_rules
from restock_service.api import (
    console,
    errors,
    idempotent,
    merchants,
    middleware,
    restocks,
    routing,
    service,
    stock,
)
from restock_service.config import Settings
from restock_service.console import Console
from restock_service.drain import Drain
from restock_service.fair_share import FairShare
from restock_service.keys import Keyring
from restock_service.logs import configure_logging
from restock_service.metrics import Metrics
from restock_service.migrations import known_revisions
from restock_service.store import open_store
from restock_service.tables import MERCHANT_ID_PATTERN

log = logging.getLogger(__name__)

DESCRIPTION = """\
Adds a cancelled order's stock back to the inventory sync, exactly as the sync deducted it
(the sync-execution snapshot), at most once per order. Errors are RFC 9457 problem
documents (`application/problem+json`).
"""


def create_app(settings: Settings | None = None, *, fast_routes: bool = True) -> FastAPI:
    """Build the application; the store lives as long as the app's lifespan.

    ``fast_routes=False`` leaves every request to FastAPI's general handler (see
    api/routing.py); the tests use it to check that both answer alike.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    keys = settings.keys()
    if not keys.enabled:
        log.warning(
            "RESTOCK_API_KEYS is empty: every call is served WITHOUT authentication "
            "(local development only) until a key is made in the database"
        )

    keyring = Keyring(keys)
    metrics = Metrics()
    drain = Drain(settings.drain_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = open_store(settings)
        app.state.store.watch_pool(metrics.pool)
        known_revisions()  # read the scripts once, before /ready asks
        # What start-up built lives as long as the process: keep the collector from scanning
        # it at every full collection, each a pause of about 50 ms per 100,000 objects.
        gc.collect()
        gc.freeze()
        store = app.state.store
        purges = {
            "forgotten idempotency keys": store.purge_keys,
            "lapsed console sign-outs": store.purge_sign_outs,
        }
        tasks = [
            asyncio.create_task(
                idempotency.purge_forever(purges, settings.idempotency_purge_interval_s)
            )
        ]
        if drain.install():
            tasks.append(asyncio.create_task(drain.forward_when_due()))
        try:
            yield
        finally:
            drain.uninstall()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.store.close()
            metrics.retire()

    app = FastAPI(
        title="restock-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.keyring = keyring
    app.state.drain = drain
    errors.install(app, settings.retry_after_s)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    routers = (stock.router, restocks.router, merchants.router, service.router)
    for router in routers:
        app.include_router(router)
    # The console's pages: out of the OpenAPI document, and out of ShortWay and Idempotent
    # (they are not API routes); its routes check their own session cookie.
    app.include_router(console.router)
    console.install_state(
        app.state,
        Console.of(keyring, settings.console_secret.get_secret_value(), settings.console_session_s),
        settings.retry_after_s,
        settings.idempotency_ttl_s,
    )
    # A request meets the Gate (request id, timing, key, body limit), Idempotent (keyed
    # writes), then ShortWay, which answers valid requests and hands the rest to FastAPI.
    # Added innermost first.
    routes = [route for router in routers for route in router.routes]
    app.add_middleware(
        routing.ShortWay,
        routes=routes,
        enabled=fast_routes,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(idempotent.Idempotent, routes=routes, settings=settings, metrics=metrics)
    app.add_middleware(
        middleware.Gate,
        keyring=keyring,
        limit=settings.max_body_bytes,
        metrics=metrics,
        drain=drain,
        body_timeout_s=settings.body_timeout_s,
        retry_after_s=settings.retry_after_s,
        share=FairShare(settings.merchant_places, settings.merchant_queue_s),
    )
    return app


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The generated document, with error bodies declared as application/problem+json and
    the Idempotency-Key header on every write (it is read before routing)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        document.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "RESTOCK_API_KEYS"}
        }
        document["security"] = [{"bearer": []}]
        for route, path in document["paths"].items():
            for method, operation in path.items():
                if route in middleware.OPEN_PATHS:
                    operation["security"] = []
                elif middleware.merchant_data(route):
                    _declare_merchant(operation)
                if method.upper() in idempotency.WRITE_METHODS:
                    _declare_idempotency(operation, settings.idempotency_required)
                for status, response in operation["responses"].items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" in content:
                        response["content"] = {errors.PROBLEM_JSON: content.pop("application/json")}
        app.openapi_schema = document
    return app.openapi_schema


def _declare_header(
    operation: dict[str, Any], parameter: dict[str, Any], answers: dict[str, str]
) -> None:
    """Declare a header that the gates read before routing, and the problems it can answer
    (status: description), each as the operation's other problem documents."""
    operation.setdefault("parameters", []).append({"in": "header", **parameter})
    responses = operation["responses"]
    problem = responses["422"]["content"]
    for status, description in answers.items():
        responses.setdefault(status, {"description": description, "content": problem})


def _declare_merchant(operation: dict[str, Any]) -> None:
    header = merchant_rules.HEADER
    parameter = {
        "name": header,
        "required": False,
        "description": "The merchant the call is for (contract v1.3): required with a "
        "platform key; a merchant key's own, or absent; without keys, `default` when "
        "absent. 400 when malformed or missing with a platform key, 403 for another "
        "merchant than a merchant key's, 404 for a merchant not registered.",
        "schema": {"type": "string", "pattern": MERCHANT_ID_PATTERN},
    }
    answers = {
        "400": f"A malformed or missing `{header}`.",
        "404": "Unknown sku or order, or a merchant not registered.",
        "429": "Too many requests of the merchant at once; nothing was done (`Retry-After: 1`).",
    }
    _declare_header(operation, parameter, answers)


def _declare_idempotency(operation: dict[str, Any], required: bool) -> None:
    header = idempotency.HEADER
    parameter = {
        "name": header,
        "required": required,
        "description": "Makes a retry safe: the same key with the same request gets the "
        f"first answer again, with `{idempotency.REPLAYED_HEADER}: true`. 1 to 255 visible "
        "ASCII characters.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    }
    answers = {
        "400": f"A malformed or missing `{header}`.",
        "409": f"A request with this `{header}` is still in flight (`Retry-After: 1`).",
    }
    _declare_header(operation, parameter, answers)
