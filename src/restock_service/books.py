"""`restock-service check`: prove that stock, the ledger and the restock records agree."""

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service.tables import (
    restock_lines,
    restocks,
    stock,
    stock_movements,
    sync_execution_lines,
)


@dataclass(frozen=True, slots=True)
class BooksReport:
    skus: int
    restored: int
    problems: tuple[str, ...]

    @property
    def balanced(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"books balance: {self.skus} skus equal their ledger sums; "
            f"{self.restored} restored restocks match their ledger rows"
        )


async def check_books(conn: AsyncConnection) -> BooksReport:
    """Every sku's quantity is its ledger sum, and each ledger row's quantity_after its sku's
    running sum up to it; every restock moved exactly its lines, and its lines are its
    order's snapshot."""
    problems: list[str] = []

    ledger_sum = (
        sa.select(stock_movements.c.sku, sa.func.sum(stock_movements.c.delta).label("total"))
        .group_by(stock_movements.c.sku)
        .subquery()
    )
    every_sku = sa.union(sa.select(stock.c.sku), sa.select(ledger_sum.c.sku)).subquery()
    quantity = sa.func.coalesce(stock.c.quantity, 0)
    total = sa.func.coalesce(ledger_sum.c.total, 0)
    unbalanced = await conn.execute(
        sa.select(every_sku.c.sku, quantity, total)
        .select_from(every_sku)
        .outerjoin(stock, stock.c.sku == every_sku.c.sku)
        .outerjoin(ledger_sum, ledger_sum.c.sku == every_sku.c.sku)
        .where(quantity != total)
        .order_by(every_sku.c.sku)
    )
    problems += [f"sku {sku}: quantity {q} but its ledger sums to {t}" for sku, q, t in unbalanced]
    problems += await _running_sums(conn)

    # Each restored line has exactly one restock ledger row of its quantity, and no order
    # has restock ledger rows beyond its restored lines.
    moved = (
        sa.select(
            stock_movements.c.order_no,
            stock_movements.c.sku,
            sa.func.count().label("rows"),
            sa.func.sum(stock_movements.c.delta).label("delta"),
        )
        .where(stock_movements.c.reason == "restock")
        .group_by(stock_movements.c.order_no, stock_movements.c.sku)
        .subquery()
    )
    restored_lines = (
        sa.select(restock_lines.c.order_no, restock_lines.c.sku, restock_lines.c.quantity)
        .join(restocks, restocks.c.order_no == restock_lines.c.order_no)
        .where(restocks.c.status == "restored")
        .subquery()
    )
    mismatched = await conn.execute(
        sa.select(
            restored_lines.c.order_no,
            restored_lines.c.sku,
            restored_lines.c.quantity,
            moved.c.rows,
            moved.c.delta,
        )
        .select_from(restored_lines)
        .outerjoin(
            moved,
            sa.and_(
                moved.c.order_no == restored_lines.c.order_no,
                moved.c.sku == restored_lines.c.sku,
            ),
        )
        .where(
            sa.or_(
                moved.c.rows.is_(None),
                moved.c.rows != 1,
                moved.c.delta != restored_lines.c.quantity,
            )
        )
        .order_by(restored_lines.c.order_no, restored_lines.c.sku)
    )
    problems += [
        f"restock {order_no} sku {sku}: restored {q} but the ledger has "
        f"{n or 0} row(s) adding {d or 0}"
        for order_no, sku, q, n, d in mismatched
    ]
    strays = await conn.execute(
        sa.select(moved.c.order_no, moved.c.sku, moved.c.delta)
        .select_from(moved)
        .outerjoin(
            restored_lines,
            sa.and_(
                moved.c.order_no == restored_lines.c.order_no,
                moved.c.sku == restored_lines.c.sku,
            ),
        )
        .where(restored_lines.c.order_no.is_(None))
        .order_by(moved.c.order_no, moved.c.sku)
    )
    problems += [
        f"ledger adds {d} to sku {sku} for order {order_no}, which has no restored line"
        for order_no, sku, d in strays
    ]

    problems += await _snapshots(conn)

    skus = (await conn.execute(sa.select(sa.func.count()).select_from(stock))).scalar_one()
    restored = (
        await conn.execute(
            sa.select(sa.func.count()).select_from(restocks).where(restocks.c.status == "restored")
        )
    ).scalar_one()
    return BooksReport(skus=skus, restored=restored, problems=tuple(problems))


async def _running_sums(conn: AsyncConnection) -> list[str]:
    """Each ledger row whose quantity_after departs from its sku's running sum of deltas.

    The database walks each sku's rows in id order (its index) and returns only the rows
    where the difference changes to a non-zero amount: a falsified delta puts every later row
    of its sku off by the same amount, one break that is named once, where it starts.
    """
    m = stock_movements.c
    running = sa.func.sum(m.delta).over(partition_by=m.sku, order_by=m.id, rows=(None, 0))
    # One window, so that the database reads each sku's rows once, in index order: the row
    # before's difference is its quantity_after less the running sum before this delta.
    previous = sa.func.lag(m.quantity_after, 1, 0).over(partition_by=m.sku, order_by=m.id)
    rows = sa.select(
        m.id,
        m.sku,
        m.quantity_after,
        m.delta,
        sa.cast(running, sa.BigInteger).label("running"),
        sa.cast(previous, sa.BigInteger).label("previous"),
    ).subquery()
    r = rows.c
    off = r.quantity_after - r.running
    departures = await conn.execute(
        sa.select(r.id, r.sku, r.quantity_after, r.running)
        .where(off != 0, off != r.previous - (r.running - r.delta))
        .order_by(r.sku, r.id)
    )
    return [
        f"ledger row {row_id} sku {sku}: quantity_after {q} but the sku's deltas sum to {t} by then"
        for row_id, sku, q, t in departures
    ]


async def _snapshots(conn: AsyncConnection) -> list[str]:
    """Each restock line, of any status, that is not its order's sync execution line.

    A record's lines are its order's snapshot as it was decided (rules.decide), whether the
    record restored them, failed or was resolved by hand.
    """
    r, s = restock_lines.c, sync_execution_lines.c
    same_line = sa.and_(s.order_no == r.order_no, s.sku == r.sku)
    differing = await conn.execute(
        sa.select(r.order_no, r.sku, r.quantity, s.quantity)
        .select_from(restock_lines)
        .outerjoin(sync_execution_lines, same_line)
        .where(sa.or_(s.quantity.is_(None), s.quantity != r.quantity))
    )
    recorded = sa.select(restocks.c.order_no).where(restocks.c.order_no == s.order_no)
    lacking = await conn.execute(
        sa.select(s.order_no, s.sku, sa.null(), s.quantity)
        .select_from(sync_execution_lines)
        .outerjoin(restock_lines, same_line)
        .where(r.order_no.is_(None), recorded.exists())
    )
    lines = sorted([*differing, *lacking], key=lambda row: (row[0], row[1]))
    return [
        f"restock {order_no} sku {sku}: "
        f"{'no line' if line is None else f'line of {line}'} "
        f"but the order's sync execution has {'none' if snap is None else snap}"
        for order_no, sku, line, snap in lines
    ]
