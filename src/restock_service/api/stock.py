"""Stock per sku, and the sync executions that deduct from it."""

from fastapi import APIRouter, Response, status

from restock_service import stock
from restock_service.api.deps import (
    DB,
    Cursor,
    Limit,
    OrderNoPath,
    Scoped,
    SkuPath,
    problems,
)
from restock_service.api.routing import FastRoute
from restock_service.schemas import (
    AdjustmentIn,
    MovementPage,
    StockChangesPage,
    StockOut,
    StockPut,
    SyncBatchIn,
    SyncBatchOut,
    SyncExecutionIn,
    SyncExecutionOut,
)

router = APIRouter(route_class=FastRoute)


@router.put("/stock/{sku}", operation_id="putStock", tags=["stock"], responses=problems())
async def put_stock(sku: SkuPath, body: StockPut, db: DB, scope: Scoped) -> StockOut:
    """Register a sku, or set its quantity."""
    return await stock.set_quantity(db, scope, sku, body.quantity, scope.now())


@router.get("/stock/{sku}", operation_id="getStock", tags=["stock"], responses=problems(404))
async def get_stock(sku: SkuPath, db: DB, scope: Scoped) -> StockOut:
    """Read a sku's quantity."""
    return await stock.get_stock(db, scope, sku)


@router.delete(
    "/stock/{sku}",
    operation_id="deleteStock",
    tags=["stock"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
)
async def delete_stock(sku: SkuPath, db: DB, scope: Scoped) -> None:
    """Remove a sku from the inventory sync."""
    await stock.delete_stock(db, scope, sku, scope.now())


@router.post(
    "/stock/{sku}/adjustments",
    operation_id="adjustStock",
    tags=["stock"],
    responses=problems(404),
)
async def adjust_stock(sku: SkuPath, body: AdjustmentIn, db: DB, scope: Scoped) -> StockOut:
    """Adjust a sku's quantity by hand (在庫連携で手動調整)."""
    return await stock.adjust_stock(db, scope, sku, body, scope.now())


@router.get(
    "/stock/{sku}/movements",
    operation_id="listStockMovements",
    tags=["stock"],
    responses=problems(404),
)
async def list_movements(
    sku: SkuPath, db: DB, scope: Scoped, limit: Limit = 100, cursor: Cursor = None
) -> MovementPage:
    """List a sku's ledger, oldest first."""
    return await stock.list_movements(db, scope, sku, limit=limit, cursor=cursor)


@router.get("/stock-changes", operation_id="listStockChanges", tags=["stock"], responses=problems())
async def stock_changes(
    db: DB,
    scope: Scoped,
    after: Cursor = None,
    limit: Limit = 100,
) -> StockChangesPage:
    """What the periodic sync must push: each sku changed after the cursor, once."""
    return await stock.stock_changes(db, scope, after=after, limit=limit)


@router.post(
    "/sync-executions",
    operation_id="createSyncExecution",
    tags=["sync executions"],
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def create_sync_execution(body: SyncExecutionIn, db: DB, scope: Scoped) -> SyncExecutionOut:
    """Record a sync execution and deduct its lines from stock, in one transaction."""
    return await stock.record_sync_execution(db, scope, body, scope.now())


@router.post(
    "/sync-executions/batch",
    operation_id="createSyncExecutions",
    tags=["sync executions"],
    responses=problems(),
)
async def create_sync_executions(body: SyncBatchIn, db: DB, scope: Scoped) -> SyncBatchOut:
    """Record many sync executions; each order is recorded, or left alone, on its own."""
    return await stock.record_sync_batch(db, scope, body, scope.now())


@router.get(
    "/sync-executions/{order_no}",
    operation_id="getSyncExecution",
    tags=["sync executions"],
    responses=problems(404),
)
async def get_sync_execution(order_no: OrderNoPath, db: DB, scope: Scoped) -> SyncExecutionOut:
    """Read an order's sync execution (its snapshot lines)."""
    return await stock.get_sync_execution(db, scope, order_no)
