"""Merchants (contract v1.3): which merchant a request is for, and which merchants exist.

One deployment serves many merchants, each sealed off from the others; every deployment has
``default``, which a deployment that never names a merchant serves. A request names its
merchant by its key, or, for a platform key (and with no keys configured), by the
``Merchant-Id`` header. These rules know no HTTP framework: the Gate (api/middleware.py)
applies them before routing.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from restock_service.access import Caller
from restock_service.errors import FieldProblem, Forbidden, InvalidRequest, NotFound
from restock_service.tables import DEFAULT_MERCHANT, MERCHANT_ID_RULE, is_merchant_id

HEADER = "Merchant-Id"


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    created_at: datetime


class MerchantHeaderInvalid(InvalidRequest):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__([FieldProblem((HEADER,), message, location="header")])


class OtherMerchant(Forbidden):
    """A merchant key sent with the id of another merchant: nothing is done."""

    def __init__(self) -> None:
        super().__init__(f"this key is its merchant's: {HEADER} names another merchant")


class NoSuchMerchant(NotFound):
    def __init__(self, merchant_id: str) -> None:
        super().__init__(f"no merchant {merchant_id!r} is registered")


@dataclass(frozen=True, slots=True)
class Wanted:
    """The merchant a request is for, and whether it must still be found registered (one
    named by the header)."""

    merchant_id: str
    named: bool


def wanted(caller: Caller | None, given: list[bytes]) -> Wanted:
    """The merchant of a request from its key (``caller``, None with no keys configured)
    and its ``Merchant-Id`` header values; raises a refusal otherwise (contract v1.3)."""
    if len(given) > 1:
        raise MerchantHeaderInvalid("was sent more than once; send one merchant per request")
    merchant_id = given[0].decode("latin-1") if given else None
    if merchant_id is not None and not is_merchant_id(merchant_id):
        raise MerchantHeaderInvalid(f"must be {MERCHANT_ID_RULE}")
    if caller is not None and not caller.platform:
        if merchant_id is not None and merchant_id != caller.merchant:
            raise OtherMerchant()
        return Wanted(caller.merchant, named=False)
    if merchant_id is None:
        if caller is not None:  # a platform key serves every merchant: it must name one
            raise MerchantHeaderInvalid("is required with a platform key")
        return Wanted(DEFAULT_MERCHANT, named=False)
    return Wanted(merchant_id, named=True)


Lookup = Callable[[str], Awaitable[Merchant | None]]


class KnownMerchants:
    """The merchants this process has found registered, kept for its life: no merchant is
    ever removed, and one registered since is looked up on its first request."""

    def __init__(self) -> None:
        self._known = {DEFAULT_MERCHANT}

    async def exists(self, merchant_id: str, lookup: Lookup) -> bool:
        if merchant_id in self._known:
            return True
        if await lookup(merchant_id) is None:
            return False
        self._known.add(merchant_id)
        return True
