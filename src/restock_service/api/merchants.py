"""The platform's calls on merchants and their keys (contract v1.3), for a platform admin
key."""

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from restock_service import platform
from restock_service.access import KEY_NAME_LENGTH, Role
from restock_service.api.deps import DB, Cursor, Keys, Limit, Scoped, problems
from restock_service.api.routing import FastRoute
from restock_service.schemas import (
    KeyIn,
    KeyList,
    KeyMadeOut,
    MerchantIn,
    MerchantOut,
    MerchantPage,
)
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


KeyNamePath = Annotated[
    str, Path(min_length=1, max_length=KEY_NAME_LENGTH, description="The key's name.")
]


@router.post(
    "/merchants/{merchant_id}/keys",
    operation_id="addMerchantKey",
    status_code=201,
    responses=problems(404, 409),
)
async def add_key(
    merchant_id: MerchantIdPath, body: KeyIn, db: DB, keys: Keys, scope: Scoped
) -> KeyMadeOut:
    """Make a key of the merchant. The answer shows the key this once: it is kept only as a
    digest (a replay answers `key` as null). 409 for a name in use, or once used."""
    return await platform.add_key(
        db, keys, scope, merchant_id, body.name, Role(body.role), scope.now()
    )


@router.get(
    "/merchants/{merchant_id}/keys", operation_id="listMerchantKeys", responses=problems(404)
)
async def list_keys(merchant_id: MerchantIdPath, db: DB) -> KeyList:
    """The merchant's keys in use, by name, without key material."""
    return await platform.list_keys(db, merchant_id)


@router.delete(
    "/merchants/{merchant_id}/keys/{name:path}",
    operation_id="revokeMerchantKey",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409),
)
async def revoke_key(
    merchant_id: MerchantIdPath, name: KeyNamePath, db: DB, keys: Keys, scope: Scoped
) -> None:
    """Revoke a key of the merchant: every process refuses it within 2 seconds. 409 for a
    key of RESTOCK_API_KEYS, which is removed there."""
    await platform.revoke_key(db, keys, scope, merchant_id, name, scope.now())
