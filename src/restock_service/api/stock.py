"""Stock per sku, and the sync executions that deduct from it."""

from fastapi import APIRouter, Response, status

from restock_service import stock
from restock_service.api.deps import DB, OrderNoPath, SkuPath, problems, utcnow
from restock_service.schemas import StockOut, StockPut, SyncExecutionIn, SyncExecutionOut

router = APIRouter()


@router.put("/stock/{sku}", operation_id="putStock", tags=["stock"], responses=problems())
async def put_stock(sku: SkuPath, body: StockPut, db: DB) -> StockOut:
    """Register a sku, or set its quantity."""
    return await stock.set_quantity(db, sku, body.quantity, utcnow())


@router.get("/stock/{sku}", operation_id="getStock", tags=["stock"], responses=problems(404))
async def get_stock(sku: SkuPath, db: DB) -> StockOut:
    """Read a sku's quantity."""
    return await stock.get_stock(db, sku)


@router.delete(
    "/stock/{sku}",
    operation_id="deleteStock",
    tags=["stock"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
)
async def delete_stock(sku: SkuPath, db: DB) -> None:
    """Remove a sku from the inventory sync."""
    await stock.delete_stock(db, sku, utcnow())


@router.post(
    "/sync-executions",
    operation_id="createSyncExecution",
    tags=["sync executions"],
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def create_sync_execution(body: SyncExecutionIn, db: DB) -> SyncExecutionOut:
    """Record a sync execution and deduct its lines from stock, in one transaction."""
    return await stock.record_sync_execution(db, body, utcnow())


@router.get(
    "/sync-executions/{order_no}",
    operation_id="getSyncExecution",
    tags=["sync executions"],
    responses=problems(404),
)
async def get_sync_execution(order_no: OrderNoPath, db: DB) -> SyncExecutionOut:
    """Read an order's sync execution (its snapshot lines)."""
    return await stock.get_sync_execution(db, order_no)
