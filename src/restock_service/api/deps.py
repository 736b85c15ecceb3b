"""Request-scoped dependencies and the route parameters shared by several routers."""

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from restock_service.access import Caller
from restock_service.api.middleware import CALLER, KEYED, MERCHANT
from restock_service.idempotency import Keyed
from restock_service.keys import Keyring
from restock_service.metrics import Metrics
from restock_service.schemas import ORDER_NO_PATTERN, SKU_PATTERN, Problem
from restock_service.scope import Scope
from restock_service.store import Store


# `async def`, so FastAPI calls them on the event loop instead of a thread pool.
async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_scope(request: Request) -> Scope:
    """The request's scope: the merchant the Gate found it is for, the name of the API key
    that sent it (None when no keys are configured), and its keyed write, if any (set by
    api/idempotent.py)."""
    caller: Caller | None = request.scope.get(CALLER)
    keyed: Keyed | None = request.scope.get(KEYED)
    return Scope(request.scope[MERCHANT], caller.actor if caller else None, keyed)


DB = Annotated[Store, Depends(get_store)]
Keys = Annotated[Keyring, Depends(get_keyring)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
Scoped = Annotated[Scope, Depends(get_scope)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]
SkuPath = Annotated[
    str, Path(max_length=64, pattern=SKU_PATTERN, description="Inventory-sync product code.")
]
OrderNoPath = Annotated[
    str, Path(max_length=64, pattern=ORDER_NO_PATTERN, description="The mall's order number.")
]

_DESCRIPTIONS = {
    401: "Keys are configured and the request has no valid `Authorization: Bearer <key>`.",
    403: "A reader key on a call that writes.",
    404: "Unknown sku or order.",
    409: "Conflicts with what is recorded; nothing changed.",
    413: "The request body is over 1 MiB; nothing was read.",
    422: "Invalid request; `errors` names each offending field. Nothing changed.",
    503: "The database cannot be reached; retry after `Retry-After` seconds.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer.

    Every route behind the key check can answer 401, 403, 413, 422 and 503.
    """
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
        }
        for status in sorted({*statuses, 401, 403, 413, 422, 503})
    }
