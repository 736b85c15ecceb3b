"""Stock per sku and the sync executions that deduct from it."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service import cursors
from restock_service.db import Database
from restock_service.errors import Conflict, FieldProblem, InvalidRequest, NotFound
from restock_service.rules import duplicate_sku_problems, order_no_problems
from restock_service.schemas import (
    AdjustmentIn,
    LineOut,
    MovementOut,
    MovementPage,
    StockChange,
    StockChangesPage,
    StockOut,
    SyncExecutionIn,
    SyncExecutionOut,
)
from restock_service.sql import (
    feed_horizon,
    insert_ignoring_conflicts,
    ledger_insert,
    lock_stock,
    move_stock,
    one_of,
    register_and_lock,
)
from restock_service.tables import stock, stock_movements, sync_execution_lines, sync_executions


async def set_quantity(db: Database, sku: str, quantity: int, now: datetime) -> StockOut:
    """Register ``sku`` or set its quantity, writing the difference to the ledger."""

    async def work(conn: AsyncConnection) -> StockOut:
        current = await register_and_lock(conn, sku, now)
        await move_stock(
            conn, [(sku, quantity - current[sku], None)], current=current, reason="set", at=now
        )
        return StockOut(sku=sku, quantity=quantity, updated_at=now)

    return await db.write(work)


async def get_stock(db: Database, sku: str) -> StockOut:
    async def work(conn: AsyncConnection) -> StockOut:
        row = (
            await conn.execute(
                sa.select(stock.c.sku, stock.c.quantity, stock.c.updated_at).where(
                    stock.c.sku == sku
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"sku {sku!r} is not registered")
        return StockOut(sku=row.sku, quantity=row.quantity, updated_at=row.updated_at)

    return await db.read(work)


async def delete_stock(db: Database, sku: str, now: datetime) -> None:
    """Remove ``sku`` from the inventory sync; the ledger takes its quantity down to zero."""

    async def work(conn: AsyncConnection) -> None:
        quantity = (
            await conn.execute(
                sa.delete(stock).where(stock.c.sku == sku).returning(stock.c.quantity)
            )
        ).scalar_one_or_none()
        if quantity is None:
            raise NotFound(f"sku {sku!r} is not registered")
        await conn.execute(
            ledger_insert(conn).values(
                sku=sku, delta=-quantity, quantity_after=0, reason="delete", at=now
            )
        )

    await db.write(work)


async def record_sync_execution(
    db: Database, execution: SyncExecutionIn, now: datetime
) -> SyncExecutionOut:
    """Record that the inventory sync processed an order, and deduct its lines from stock."""
    problems = order_no_problems(execution.mall, [(("order_no",), execution.order_no)])
    problems += duplicate_sku_problems(
        (("items", i, "sku"), line.sku) for i, line in enumerate(execution.items)
    )
    if problems:
        raise InvalidRequest(problems)
    executed_at = execution.executed_at or now

    async def work(conn: AsyncConnection) -> SyncExecutionOut:
        claimed = await conn.execute(
            insert_ignoring_conflicts(conn, sync_executions)
            .values(
                order_no=execution.order_no,
                mall=execution.mall.value,
                executed_at=executed_at,
                recorded_at=now,
            )
            .returning(sync_executions.c.order_no)
        )
        if claimed.first() is None:
            raise Conflict(f"order {execution.order_no} already has a sync execution")
        current = await lock_stock(conn, (line.sku for line in execution.items))
        missing = [
            FieldProblem(("items", i, "sku"), "is not registered", line.sku, "not_registered")
            for i, line in enumerate(execution.items)
            if line.sku not in current
        ]
        if missing:
            raise InvalidRequest(missing)
        await conn.execute(
            sa.insert(sync_execution_lines),
            [
                {
                    "order_no": execution.order_no,
                    "sku": line.sku,
                    "position": i,
                    "quantity": line.quantity,
                }
                for i, line in enumerate(execution.items)
            ],
        )
        await move_stock(
            conn,
            [(line.sku, -line.quantity, execution.order_no) for line in execution.items],
            current=current,
            reason="sync_execution",
            at=now,
        )
        return SyncExecutionOut(
            order_no=execution.order_no,
            mall=execution.mall,
            items=[LineOut(sku=line.sku, quantity=line.quantity) for line in execution.items],
            executed_at=executed_at,
            recorded_at=now,
        )

    return await db.write(work)


async def get_sync_execution(db: Database, order_no: str) -> SyncExecutionOut:
    async def work(conn: AsyncConnection) -> SyncExecutionOut:
        rows = (
            await conn.execute(
                sa.select(
                    sync_executions.c.mall,
                    sync_executions.c.executed_at,
                    sync_executions.c.recorded_at,
                    sync_execution_lines.c.sku,
                    sync_execution_lines.c.quantity,
                )
                .join(sync_execution_lines)
                .where(sync_executions.c.order_no == order_no)
                .order_by(sync_execution_lines.c.position)
            )
        ).all()
        if not rows:
            raise NotFound(f"order {order_no} has no sync execution")
        return SyncExecutionOut(
            order_no=order_no,
            mall=rows[0].mall,
            items=[LineOut(sku=r.sku, quantity=r.quantity) for r in rows],
            executed_at=rows[0].executed_at,
            recorded_at=rows[0].recorded_at,
        )

    return await db.read(work)


async def adjust_stock(db: Database, sku: str, adjustment: AdjustmentIn, now: datetime) -> StockOut:
    """The merchant's manual adjustment (在庫連携で手動調整), written to the ledger."""

    async def work(conn: AsyncConnection) -> StockOut:
        current = await lock_stock(conn, [sku])
        if sku not in current:
            raise NotFound(f"sku {sku!r} is not registered")
        after = await move_stock(
            conn,
            [(sku, adjustment.delta, adjustment.order_no)],
            current=current,
            reason="adjustment",
            at=now,
            note=adjustment.reason,
        )
        return StockOut(sku=sku, quantity=after[sku], updated_at=now)

    return await db.write(work)


MOVEMENTS_CURSOR = "movements"


async def list_movements(db: Database, sku: str, *, limit: int, cursor: str | None) -> MovementPage:
    """A sku's ledger, oldest first; 404 only for a sku that never existed."""
    after = cursors.decode(cursor, MOVEMENTS_CURSOR, (int,), param="cursor")[0] if cursor else 0
    m = stock_movements

    async def work(conn: AsyncConnection) -> MovementPage:
        rows = (
            await conn.execute(
                sa.select(
                    m.c.id,
                    m.c.sku,
                    m.c.delta,
                    m.c.quantity_after,
                    m.c.reason,
                    m.c.order_no,
                    m.c.at,
                    m.c.note,
                )
                .where(m.c.sku == sku, m.c.id > after)
                .order_by(m.c.id)
                .limit(limit + 1)
            )
        ).all()
        if not rows and not await _ever_registered(conn, sku):
            raise NotFound(f"sku {sku!r} has never been registered")
        page = [MovementOut.model_validate(r, from_attributes=True) for r in rows[:limit]]
        more = len(rows) > limit
        return MovementPage(
            items=page,
            next_cursor=cursors.encode(MOVEMENTS_CURSOR, page[-1].id) if more else None,
        )

    return await db.read(work)


async def _ever_registered(conn: AsyncConnection, sku: str) -> bool:
    # Registering a sku always writes a ledger row, and ledger rows are never removed.
    found = await conn.execute(
        sa.select(stock_movements.c.id).where(stock_movements.c.sku == sku).limit(1)
    )
    return found.first() is not None


CHANGES_CURSOR = "changes"
# Ledger rows one feed page reads at most, per sku it may return: bounded work per call.
CHANGES_WINDOW = 8


async def stock_changes(db: Database, *, after: str | None, limit: int) -> StockChangesPage:
    """Each sku changed after the cursor, once, with its current quantity.

    Each call reads a bounded window of the ledger after the cursor, in (txid, id) order below
    the snapshot's horizon (see ``sql.feed_horizon``), so a change that commits late still
    comes after the cursor. Within the window skus come in the order of their latest change,
    so a sku shows once per page, and again only for a change past the window.
    """
    position = (
        cursors.decode(after, CHANGES_CURSOR, (int, int), param="after") if after else (-1, 0)
    )
    m = stock_movements

    async def work(conn: AsyncConnection) -> StockChangesPage:
        # A bounded window of the ledger after the cursor, on the (txid, id) index.
        query = sa.select(m.c.txid, m.c.id, m.c.sku, m.c.at).where(
            sa.tuple_(m.c.txid, m.c.id) > sa.tuple_(*position)
        )
        horizon = feed_horizon(conn)
        if horizon is not None:
            query = query.where(m.c.txid < horizon)
        window = (
            await conn.execute(query.order_by(m.c.txid, m.c.id).limit(limit * CHANGES_WINDOW))
        ).all()
        # Each sku at its latest change in the window; skus in the order of those changes.
        latest: dict[str, tuple[tuple[int, int], datetime]] = {}
        for txid, row_id, sku, at in window:
            latest.pop(sku, None)
            latest[sku] = ((txid, row_id), at)
        skus = list(latest)
        page = skus[:limit]
        if len(skus) > limit:  # the rest of the window comes next time, from here
            reached = latest[page[-1]][0]
        else:
            reached = (window[-1].txid, window[-1].id) if window else position
        changed = {sku: latest[sku][1] for sku in page}
        quantities: dict[str, int] = {}
        if changed:
            quantities = {
                sku: quantity
                for sku, quantity in await conn.execute(
                    sa.select(stock.c.sku, stock.c.quantity).where(
                        one_of(conn, stock.c.sku, changed)
                    )
                )
            }
        return StockChangesPage(
            items=[
                StockChange(
                    sku=sku,
                    quantity=quantities.get(sku, 0),
                    deleted=sku not in quantities,
                    changed_at=at,
                )
                for sku, at in changed.items()
            ],
            next_cursor=cursors.encode(CHANGES_CURSOR, *reached),
        )

    return await db.read(work)
