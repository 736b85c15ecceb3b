"""The restock use case: decide every order of a cancel batch and apply rule 8 exactly once.

Rules 1 and 2 need nothing stored; the store decides rules 3 to 8 with rules.decide on what
it reads, and applies them in one unit of work (see store/).
"""

import logging
from datetime import datetime

from restock_service import cursors
from restock_service.errors import Conflict, InvalidRequest, NotFound
from restock_service.messages import Mall, RestockStatus
from restock_service.rules import (
    BatchResult,
    Decision,
    OrderResult,
    batch_messages,
    decide,
    order_no_problems,
)
from restock_service.schemas import ResolutionIn, RestockPage, RestockRecordOut, RestockRequest
from restock_service.scope import Scope
from restock_service.store import Store

log = logging.getLogger(__name__)


async def restock_batch(
    store: Store, scope: Scope, request: RestockRequest, now: datetime
) -> BatchResult:
    """Decide each order of ``request`` and restore the ones rule 8 allows, atomically."""
    problems = order_no_problems(
        request.mall,
        ((("orders", i, "order_no"), o.order_no) for i, o in enumerate(request.orders)),
    )
    if problems:
        raise InvalidRequest(problems)

    candidates = [o.order_no for o in request.orders if o.mall_cancel_succeeded]
    decided: dict[str, Decision] = {}
    if request.restore_stock and candidates:
        decided = await store.restock(scope, request.mall, candidates, now)

    results = tuple(
        OrderResult(
            o.order_no,
            decided.get(o.order_no)
            or decide(
                restore_stock=request.restore_stock,
                mall_cancel_succeeded=o.mall_cancel_succeeded,
                request_mall=request.mall,
                recorded=None,
                snapshot=None,
                registered_skus=(),
            ),
        )
        for o in request.orders
    )
    replayed = scope.replaying  # the decisions of the first answer, told again
    for r in results:
        log.info(
            "restock decision merchant=%s order_no=%s mall=%s code=%s%s",
            scope.merchant,
            r.order_no,
            request.mall.value,
            r.decision.code.value,
            " (replayed)" if replayed else "",
            extra={
                "merchant_id": scope.merchant,
                "order_no": r.order_no,
                "mall": request.mall.value,
                "code": r.decision.code,
                "replayed": replayed,
            },
        )
    messages = batch_messages(
        restore_stock=request.restore_stock,
        any_cancel_succeeded=bool(candidates),
        results=results,
    )
    return BatchResult(request.mall, results, messages)


async def get_restock(store: Store, scope: Scope, order_no: str) -> RestockRecordOut:
    """The recorded restock of ``order_no``, with its lines."""
    record = await store.restock_record(scope, order_no)
    if record is None:
        raise NotFound(f"no restock is recorded for order {order_no}")
    return record


LIST_CURSOR = "restocks"


async def list_restocks(
    store: Store,
    scope: Scope,
    *,
    status: RestockStatus | None,
    mall: Mall | None,
    limit: int,
    cursor: str | None,
) -> RestockPage:
    """Recorded restocks, oldest ``requested_at`` first, one keyset page at a time."""
    after: tuple[datetime, str] | None = None
    if cursor is not None:
        after = cursors.decode(cursor, LIST_CURSOR, (datetime, str), param="cursor")
    records = await store.restock_records(
        scope, status=status, mall=mall, after=after, limit=limit + 1
    )
    page = records[:limit]
    last = page[-1] if len(records) > limit else None
    return RestockPage(
        items=page,
        next_cursor=cursors.encode(LIST_CURSOR, last.requested_at, last.order_no) if last else None,
    )


async def resolve_restock(
    store: Store, scope: Scope, order_no: str, resolution: ResolutionIn, now: datetime
) -> RestockRecordOut:
    """Mark a failed restock as settled by hand; stock is not touched."""
    settled = await store.resolve_restock(
        scope, order_no, resolution.note, resolution.resolved_by, now
    )
    if settled is None:
        raise NotFound(f"no restock is recorded for order {order_no}")
    if isinstance(settled, RestockStatus):
        raise Conflict(f"the restock of order {order_no} is {settled}, not failed")
    return settled
