"""The platform's calls on merchants (contract v1.3), for a platform admin key."""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from restock_service import platform
from restock_service.api.deps import DB, Cursor, Limit, Scoped, problems
from restock_service.api.routing import FastRoute
from restock_service.schemas import MerchantIn, MerchantOut, MerchantPage
from restock_service.tables import MERCHANT_ID_LENGTH, MERCHANT_ID_PATTERN, MERCHANT_ID_RULE

router = APIRouter(tags=["merchants"], route_class=FastRoute)

MerchantIdPath = Annotated[
    str,
    Path(
        max_length=MERCHANT_ID_LENGTH,
        pattern=MERCHANT_ID_PATTERN,
        description=MERCHANT_ID_RULE.capitalize() + ".",
    ),
]


@router.put(
    "/merchants/{merchant_id}",
    operation_id="putMerchant",
    status_code=200,
    responses={201: {"model": MerchantOut, "description": "Registered now."}, **problems()},
)
async def put_merchant(
    merchant_id: MerchantIdPath, body: MerchantIn, db: DB, scope: Scoped
) -> MerchantOut:
    """Register a merchant (201), or rename a registered one (200)."""
    merchant, created = await platform.put_merchant(db, scope, merchant_id, body, scope.now())
    if created:
        return Response(  # type: ignore[return-value]  # (the 201 is declared above)
            merchant.model_dump_json(), status_code=201, media_type="application/json"
        )
    return merchant


@router.get("/merchants", operation_id="listMerchants", responses=problems())
async def list_merchants(db: DB, limit: Limit = 100, cursor: Cursor = None) -> MerchantPage:
    """The registered merchants, by merchant_id, one keyset page at a time."""
    return await platform.list_merchants(db, limit=limit, cursor=cursor)


@router.get("/merchants/{merchant_id}", operation_id="getMerchant", responses=problems(404))
async def get_merchant(merchant_id: MerchantIdPath, db: DB) -> MerchantOut:
    """One registered merchant."""
    return await platform.get_merchant(db, merchant_id)
