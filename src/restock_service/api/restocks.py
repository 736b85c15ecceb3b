"""The cancel-completed event and the restock records."""

from fastapi import APIRouter

from restock_service import restock
from restock_service.api.deps import (
    DB,
    AppMetrics,
    Cursor,
    Limit,
    OrderNoPath,
    Scoped,
    problems,
)
from restock_service.api.routing import FastRoute
from restock_service.messages import Mall, RestockStatus
from restock_service.schemas import (
    ResolutionIn,
    RestockBatchOut,
    RestockPage,
    RestockRecordOut,
    RestockRequest,
)

router = APIRouter(tags=["restocks"], route_class=FastRoute)


@router.post("/restocks", operation_id="createRestocks", responses=problems())
async def create_restocks(
    body: RestockRequest, db: DB, metrics: AppMetrics, scope: Scoped
) -> RestockBatchOut:
    """Restore each cancelled order's synced stock, at most once per order."""
    batch = await restock.restock_batch(db, scope, body, scope.now())
    if not scope.replaying:  # counted when first answered
        metrics.count_orders(batch)
    return RestockBatchOut.of(batch)


@router.get("/restocks", operation_id="listRestocks", responses=problems())
async def list_restocks(
    db: DB,
    scope: Scoped,
    status: RestockStatus | None = None,
    mall: Mall | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RestockPage:
    """List recorded restocks, oldest first, one keyset page at a time."""
    return await restock.list_restocks(
        db, scope, status=status, mall=mall, limit=limit, cursor=cursor
    )


@router.get("/restocks/{order_no}", operation_id="getRestock", responses=problems(404))
async def get_restock(order_no: OrderNoPath, db: DB, scope: Scoped) -> RestockRecordOut:
    """Read the restock recorded for an order."""
    return await restock.get_restock(db, scope, order_no)


@router.post(
    "/restocks/{order_no}/resolution",
    operation_id="resolveRestock",
    responses=problems(404, 409),
)
async def resolve_restock(
    order_no: OrderNoPath, body: ResolutionIn, db: DB, scope: Scoped
) -> RestockRecordOut:
    """Mark a failed restock as settled by hand; changes no stock."""
    return await restock.resolve_restock(db, scope, order_no, body, scope.now())
