"""The platform's calls (contract v1.3): the merchants a deployment serves, and their keys.
Only a platform admin key makes them (the Gate checks it); the CLI makes them too."""

from datetime import datetime

from restock_service import cursors
from restock_service.access import Role, digest, new_key
from restock_service.keys import ConfiguredKey, KeyNameTaken, KeyRecord, Keyring, NoSuchKey
from restock_service.merchants import Merchant, NoSuchMerchant
from restock_service.schemas import (
    KeyList,
    KeyMadeOut,
    KeyOut,
    MerchantIn,
    MerchantOut,
    MerchantPage,
)
from restock_service.scope import Scope
from restock_service.store import Store
from restock_service.tables import PLATFORM

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


async def _registered(store: Store, merchant_id: str) -> None:
    """Raise NoSuchMerchant unless ``merchant_id`` is registered (or is PLATFORM). No
    merchant is ever removed, so what this finds still holds when the write comes."""
    if merchant_id != PLATFORM and await store.merchant(merchant_id) is None:
        raise NoSuchMerchant(merchant_id)


async def add_key(
    store: Store,
    keyring: Keyring,
    scope: Scope,
    merchant_id: str,
    name: str,
    role: Role,
    now: datetime,
) -> KeyMadeOut:
    """Make a key of ``merchant_id`` (PLATFORM: a platform key), kept only as its digest.
    The answer shows the key, this once: a replay of the call answers it as null."""
    await _registered(store, merchant_id)
    if keyring.is_configured(merchant_id, name):
        raise KeyNameTaken(name)
    key = new_key()
    made = await store.add_api_key(scope, merchant_id, name, role, digest(key), now)
    if made is None:
        raise KeyNameTaken(name)
    return KeyMadeOut(
        merchant_id=made.merchant_id,
        name=made.name,
        role=made.role,
        key=None if scope.replaying else key,
        created_at=made.created_at,
    )


def key_out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        name=record.name,
        role=record.role,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
    )


async def list_keys(store: Store, merchant_id: str) -> KeyList:
    """The keys in use at ``merchant_id``, by name."""
    await _registered(store, merchant_id)
    return KeyList(items=[key_out(r) for r in await store.api_keys(merchant_id)])


async def revoke_key(
    store: Store, keyring: Keyring, scope: Scope, merchant_id: str, name: str, now: datetime
) -> None:
    """Revoke a key in use; this process refuses it at once, every other within
    ``Keyring.TTL_S``."""
    await _registered(store, merchant_id)
    if keyring.is_configured(merchant_id, name):
        raise ConfiguredKey(name)
    if not await store.revoke_api_key(scope, merchant_id, name, now):
        raise NoSuchKey(name)
    keyring.forget()
