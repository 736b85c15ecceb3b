"""The cancel-completed event and the restock records."""

from fastapi import APIRouter

from restock_service import restock
from restock_service.api.deps import DB, OrderNoPath, problems, utcnow
from restock_service.schemas import RestockBatchOut, RestockRecordOut, RestockRequest

router = APIRouter(tags=["restocks"])


@router.post("/restocks", operation_id="createRestocks", responses=problems())
async def create_restocks(body: RestockRequest, db: DB) -> RestockBatchOut:
    """Restore each cancelled order's synced stock, at most once per order."""
    return RestockBatchOut.of(await restock.restock_batch(db, body, utcnow()))


@router.get("/restocks/{order_no}", operation_id="getRestock", responses=problems(404))
async def get_restock(order_no: OrderNoPath, db: DB) -> RestockRecordOut:
    """Read the restock recorded for an order."""
    return await restock.get_restock(db, order_no)
