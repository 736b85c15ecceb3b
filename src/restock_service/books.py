"""`restock-service check`: prove that stock, the ledger and the restock records agree."""

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service.tables import restock_lines, restocks, stock, stock_movements


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
    """Every sku's quantity is its ledger sum; every restock moved exactly its lines."""
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

    skus = (await conn.execute(sa.select(sa.func.count()).select_from(stock))).scalar_one()
    restored = (
        await conn.execute(
            sa.select(sa.func.count()).select_from(restocks).where(restocks.c.status == "restored")
        )
    ).scalar_one()
    return BooksReport(skus=skus, restored=restored, problems=tuple(problems))
