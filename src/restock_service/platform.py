"""The platform's calls (contract v1.3): the merchants a deployment serves, and later their
keys. Only a platform admin key makes them (the Gate checks it)."""

from datetime import datetime

from restock_service import cursors
from restock_service.merchants import Merchant, NoSuchMerchant
from restock_service.schemas import MerchantIn, MerchantOut, MerchantPage
from restock_service.scope import Scope
from restock_service.store import Store

MERCHANTS_CURSOR = "merchants"


def _out(merchant: Merchant) -> MerchantOut:
    return MerchantOut(
        merchant_id=merchant.merchant_id, name=merchant.name, created_at=merchant.created_at
    )


async def put_merchant(
    store: Store, scope: Scope, merchant_id: str, body: MerchantIn, now: datetime
) -> tuple[MerchantOut, bool]:
    """Register a merchant, or rename it; the merchant, and whether it is new."""
    merchant, created = await store.put_merchant(scope, merchant_id, body.name, now, rename=True)
    return _out(merchant), created


async def get_merchant(store: Store, merchant_id: str) -> MerchantOut:
    merchant = await store.merchant(merchant_id)
    if merchant is None:
        raise NoSuchMerchant(merchant_id)
    return _out(merchant)


async def list_merchants(store: Store, *, limit: int, cursor: str | None) -> MerchantPage:
    """The merchants by merchant_id, one keyset page at a time."""
    after = cursors.decode(cursor, MERCHANTS_CURSOR, (str,), param="cursor")[0] if cursor else None
    found = await store.merchants(after, limit + 1)
    page = found[:limit]
    last = page[-1].merchant_id if len(found) > limit else None
    return MerchantPage(
        items=[_out(m) for m in page],
        next_cursor=cursors.encode(MERCHANTS_CURSOR, last) if last else None,
    )
