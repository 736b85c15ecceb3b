"""Stock per sku, its ledger and change feed, and the sync executions that deduct from it."""

from datetime import datetime

from restock_service import cursors
from restock_service.errors import Conflict, FieldProblem, InvalidRequest, NotFound
from restock_service.messages import SyncCode
from restock_service.rules import (
    ADJUSTED_QUANTITY_LIMIT,
    SyncDecision,
    adjustment_refused,
    duplicate_problems,
    order_no_problems,
)
from restock_service.schemas import (
    AdjustmentIn,
    LineOut,
    MovementPage,
    StockChange,
    StockChangesPage,
    StockOut,
    SyncBatchIn,
    SyncBatchOut,
    SyncExecutionIn,
    SyncExecutionOut,
)
from restock_service.scope import Scope
from restock_service.store import LedgerPosition, Store


async def set_quantity(
    store: Store, scope: Scope, sku: str, quantity: int, now: datetime
) -> StockOut:
    """Register ``sku`` or set its quantity, writing the difference to the ledger."""
    return await store.set_stock(scope, sku, quantity, now)


async def get_stock(store: Store, scope: Scope, sku: str) -> StockOut:
    found = await store.stock(scope, sku)
    if found is None:
        raise NotFound(f"sku {sku!r} is not registered")
    return found


async def delete_stock(store: Store, scope: Scope, sku: str, now: datetime) -> None:
    """Remove ``sku`` from the inventory sync; the ledger takes its quantity down to zero."""
    if not await store.delete_stock(scope, sku, now):
        raise NotFound(f"sku {sku!r} is not registered")


async def adjust_stock(
    store: Store, scope: Scope, sku: str, adjustment: AdjustmentIn, now: datetime
) -> StockOut:
    """The merchant's manual adjustment (在庫連携で手動調整), written to the ledger."""
    adjusted = await store.adjust_stock(
        scope, sku, adjustment.delta, adjustment.reason, adjustment.order_no, now,
        limit=ADJUSTED_QUANTITY_LIMIT,
    )  # fmt: skip
    if adjusted is None:
        raise NotFound(f"sku {sku!r} is not registered")
    result, done = adjusted
    if not done:
        raise InvalidRequest([adjustment_refused(result.quantity, adjustment.delta)])
    return result


# --- sync executions -----------------------------------------------------------------------


def _execution_problems(
    execution: SyncExecutionIn, at: tuple[str | int, ...] = ()
) -> list[FieldProblem]:
    problems = order_no_problems(execution.mall, [((*at, "order_no"), execution.order_no)])
    problems += duplicate_problems(
        ((*at, "items", i, "sku"), line.sku) for i, line in enumerate(execution.items)
    )
    return problems


async def record_sync_execution(
    store: Store, scope: Scope, execution: SyncExecutionIn, now: datetime
) -> SyncExecutionOut:
    """Record that the inventory sync processed an order, and deduct its lines from stock."""
    problems = _execution_problems(execution)
    if problems:
        raise InvalidRequest(problems)
    (decision,) = await store.record_sync_executions(scope, [execution], now)
    if decision.code is SyncCode.ALREADY_RECORDED:
        raise Conflict(f"order {execution.order_no} already has a sync execution")
    if decision.code is SyncCode.SKU_NOT_REGISTERED:
        raise InvalidRequest(
            [
                FieldProblem(("items", i, "sku"), "is not registered", line.sku, "not_registered")
                for i, line in enumerate(execution.items)
                if line.sku in decision.missing_skus
            ]
        )
    return SyncExecutionOut(
        order_no=execution.order_no,
        mall=execution.mall,
        items=[LineOut(sku=line.sku, quantity=line.quantity) for line in execution.items],
        executed_at=execution.executed_at or now,
        recorded_at=now,
    )


async def record_sync_batch(
    store: Store, scope: Scope, batch: SyncBatchIn, now: datetime
) -> SyncBatchOut:
    """Record many processed orders at once; each is decided and applied on its own."""
    problems = [
        problem
        for i, execution in enumerate(batch.executions)
        for problem in _execution_problems(execution, ("executions", i))
    ]
    problems += duplicate_problems(
        (("executions", i, "order_no"), e.order_no) for i, e in enumerate(batch.executions)
    )
    if problems:
        raise InvalidRequest(problems)
    decisions: list[SyncDecision] = await store.record_sync_executions(scope, batch.executions, now)
    return SyncBatchOut.of(decisions)


async def get_sync_execution(store: Store, scope: Scope, order_no: str) -> SyncExecutionOut:
    found = await store.sync_execution(scope, order_no)
    if found is None:
        raise NotFound(f"order {order_no} has no sync execution")
    return found


# --- the ledger and the change feed --------------------------------------------------------

MOVEMENTS_CURSOR = "movements"


async def list_movements(
    store: Store, scope: Scope, sku: str, *, limit: int, cursor: str | None
) -> MovementPage:
    """A sku's ledger, oldest first; 404 only for a sku that never existed."""
    after = cursors.decode(cursor, MOVEMENTS_CURSOR, (int,), param="cursor")[0] if cursor else 0
    rows = await store.movements(scope, sku, after, limit + 1)
    if rows is None:
        raise NotFound(f"sku {sku!r} has never been registered")
    page = rows[:limit]
    return MovementPage(
        items=page,
        next_cursor=cursors.encode(MOVEMENTS_CURSOR, page[-1].id) if len(rows) > limit else None,
    )


CHANGES_CURSOR = "changes"
# Ledger rows one feed page reads at most, per sku it may return: bounded work per call.
CHANGES_WINDOW = 8


async def stock_changes(
    store: Store, scope: Scope, *, after: str | None, limit: int
) -> StockChangesPage:
    """Each sku changed after the cursor, once, with its current quantity.

    Each call reads a bounded window of the ledger after the cursor, in the feed's order
    (store.ledger_window), so a change that commits late still comes after the cursor.
    Within the window skus come in the order of their latest change, so a sku shows once
    per page, and again only for a change past the window.
    """
    position = (
        cursors.decode(after, CHANGES_CURSOR, (int, int), param="after") if after else (-1, 0)
    )
    window = await store.ledger_window(scope, position, limit * CHANGES_WINDOW)
    # Each sku at its latest change in the window; skus in the order of those changes.
    latest: dict[str, LedgerPosition] = {}
    for row in window:
        latest.pop(row.sku, None)
        latest[row.sku] = row
    page = list(latest)[:limit]
    if len(latest) > limit:  # the rest of the window comes next time, from here
        reached = (latest[page[-1]].txid, latest[page[-1]].id)
    else:
        reached = (window[-1].txid, window[-1].id) if window else position
    quantities = await store.quantities(scope, page) if page else {}
    return StockChangesPage(
        items=[
            StockChange(
                sku=sku,
                quantity=quantities.get(sku, 0),
                deleted=sku not in quantities,
                changed_at=latest[sku].at,
            )
            for sku in page
        ],
        next_cursor=cursors.encode(CHANGES_CURSOR, *reached),
    )
