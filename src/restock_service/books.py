"""`restock-service check`: prove that stock, the ledger and the restock records agree.

Every figure is a merchant's own: sums, running sums and lines are taken per merchant, and a
problem at any merchant but ``default`` names it (so a deployment of one merchant reads as
it always has).
"""

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service.tables import (
    DEFAULT_MERCHANT,
    merchants,
    restock_lines,
    restocks,
    stock,
    stock_movements,
    sync_execution_lines,
)


@dataclass(frozen=True, slots=True)
class BooksReport:
    merchants: int
    skus: int
    restored: int
    problems: tuple[str, ...]

    @property
    def balanced(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"books balance at {self.merchants} merchant{'' if self.merchants == 1 else 's'}: "
            f"{self.skus} skus equal their ledger sums; "
            f"{self.restored} restored restocks match their ledger rows"
        )


def _at(merchant: str) -> str:
    """How a problem names its merchant: not at all for ``default``."""
    return "" if merchant == DEFAULT_MERCHANT else f"merchant {merchant}: "


async def check_books(conn: AsyncConnection, merchant: str | None = None) -> BooksReport:
    """Every sku's quantity is its ledger sum, and each ledger row's quantity_after its sku's
    running sum up to it; every restock moved exactly its lines, and its lines are its
    order's snapshot. At every merchant, or at ``merchant`` alone."""
    of = _Of(merchant)
    problems: list[str] = []

    m = stock_movements.c
    ledger_sum = (
        sa.select(m.merchant_id, m.sku, sa.func.sum(m.delta).label("total"))
        .where(of(stock_movements))
        .group_by(m.merchant_id, m.sku)
        .subquery()
    )
    every_sku = sa.union(
        sa.select(stock.c.merchant_id, stock.c.sku).where(of(stock)),
        sa.select(ledger_sum.c.merchant_id, ledger_sum.c.sku),
    ).subquery()
    quantity = sa.func.coalesce(stock.c.quantity, 0)
    total = sa.func.coalesce(ledger_sum.c.total, 0)
    unbalanced = await conn.execute(
        sa.select(every_sku.c.merchant_id, every_sku.c.sku, quantity, total)
        .select_from(every_sku)
        .outerjoin(stock, _same(stock.c, every_sku.c, "sku"))
        .outerjoin(ledger_sum, _same(ledger_sum.c, every_sku.c, "sku"))
        .where(quantity != total)
        .order_by(every_sku.c.merchant_id, every_sku.c.sku)
    )
    problems += [
        f"{_at(at)}sku {sku}: quantity {q} but its ledger sums to {t}"
        for at, sku, q, t in unbalanced
    ]
    problems += await _running_sums(conn, of)

    # Each restored line has exactly one restock ledger row of its quantity, and no order
    # has restock ledger rows beyond its restored lines.
    moved = (
        sa.select(
            m.merchant_id,
            m.order_no,
            m.sku,
            sa.func.count().label("rows"),
            sa.func.sum(m.delta).label("delta"),
        )
        .where(of(stock_movements), m.reason == "restock")
        .group_by(m.merchant_id, m.order_no, m.sku)
        .subquery()
    )
    restored_lines = (
        sa.select(
            restock_lines.c.merchant_id,
            restock_lines.c.order_no,
            restock_lines.c.sku,
            restock_lines.c.quantity,
        )
        .join(restocks)
        .where(of(restocks), restocks.c.status == "restored")
        .subquery()
    )
    same_line = sa.and_(
        _same(moved.c, restored_lines.c, "order_no"), moved.c.sku == restored_lines.c.sku
    )
    mismatched = await conn.execute(
        sa.select(
            restored_lines.c.merchant_id,
            restored_lines.c.order_no,
            restored_lines.c.sku,
            restored_lines.c.quantity,
            moved.c.rows,
            moved.c.delta,
        )
        .select_from(restored_lines)
        .outerjoin(moved, same_line)
        .where(
            sa.or_(
                moved.c.rows.is_(None),
                moved.c.rows != 1,
                moved.c.delta != restored_lines.c.quantity,
            )
        )
        .order_by(restored_lines.c.merchant_id, restored_lines.c.order_no, restored_lines.c.sku)
    )
    problems += [
        f"{_at(at)}restock {order_no} sku {sku}: restored {q} but the ledger has "
        f"{n or 0} row(s) adding {d or 0}"
        for at, order_no, sku, q, n, d in mismatched
    ]
    strays = await conn.execute(
        sa.select(moved.c.merchant_id, moved.c.order_no, moved.c.sku, moved.c.delta)
        .select_from(moved)
        .outerjoin(restored_lines, same_line)
        .where(restored_lines.c.order_no.is_(None))
        .order_by(moved.c.merchant_id, moved.c.order_no, moved.c.sku)
    )
    problems += [
        f"{_at(at)}ledger adds {d} to sku {sku} for order {order_no}, which has no restored line"
        for at, order_no, sku, d in strays
    ]

    problems += await _snapshots(conn, of)

    async def count(table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
        query = sa.select(sa.func.count()).select_from(table).where(of(table), *where)
        return int((await conn.execute(query)).scalar_one())

    return BooksReport(
        merchants=await count(merchants),
        skus=await count(stock),
        restored=await count(restocks, restocks.c.status == "restored"),
        problems=tuple(problems),
    )


@dataclass(frozen=True, slots=True)
class _Of:
    """The rows a check reads: every merchant's, or one's."""

    merchant: str | None

    def __call__(self, table: sa.Table) -> sa.ColumnElement[bool]:
        if self.merchant is None:
            return sa.true()
        return table.c.merchant_id == self.merchant


def _same(a: Any, b: Any, key: str) -> sa.ColumnElement[bool]:
    """Rows of one merchant's one ``key``, in the column collections ``a`` and ``b``."""
    return sa.and_(a.merchant_id == b.merchant_id, a[key] == b[key])


async def _running_sums(conn: AsyncConnection, of: _Of) -> list[str]:
    """Each ledger row whose quantity_after departs from its sku's running sum of deltas.

    The database walks each sku's rows in id order (its index) and returns only the rows
    where the difference changes to a non-zero amount: a falsified delta puts every later row
    of its sku off by the same amount, one break that is named once, where it starts.
    """
    m = stock_movements.c
    sku = (m.merchant_id, m.sku)
    running = sa.func.sum(m.delta).over(partition_by=sku, order_by=m.id, rows=(None, 0))
    # One window, so that the database reads each sku's rows once, in index order: the row
    # before's difference is its quantity_after less the running sum before this delta.
    previous = sa.func.lag(m.quantity_after, 1, 0).over(partition_by=sku, order_by=m.id)
    rows = (
        sa.select(
            m.merchant_id,
            m.id,
            m.sku,
            m.quantity_after,
            m.delta,
            sa.cast(running, sa.BigInteger).label("running"),
            sa.cast(previous, sa.BigInteger).label("previous"),
        )
        .where(of(stock_movements))
        .subquery()
    )
    r = rows.c
    off = r.quantity_after - r.running
    departures = await conn.execute(
        sa.select(r.merchant_id, r.id, r.sku, r.quantity_after, r.running)
        .where(off != 0, off != r.previous - (r.running - r.delta))
        .order_by(r.merchant_id, r.sku, r.id)
    )
    return [
        f"{_at(at)}ledger row {row_id} sku {sku}: quantity_after {q} "
        f"but the sku's deltas sum to {t} by then"
        for at, row_id, sku, q, t in departures
    ]


async def _snapshots(conn: AsyncConnection, of: _Of) -> list[str]:
    """Each restock line, of any status, that is not its order's sync execution line.

    A record's lines are its order's snapshot as it was decided (rules.decide), whether the
    record restored them, failed or was resolved by hand.
    """
    r, s = restock_lines.c, sync_execution_lines.c
    same_line = sa.and_(_same(s, r, "order_no"), s.sku == r.sku)
    differing = await conn.execute(
        sa.select(r.merchant_id, r.order_no, r.sku, r.quantity, s.quantity)
        .select_from(restock_lines)
        .outerjoin(sync_execution_lines, same_line)
        .where(of(restock_lines), sa.or_(s.quantity.is_(None), s.quantity != r.quantity))
    )
    recorded = sa.select(restocks.c.order_no).where(_same(restocks.c, s, "order_no"))
    lacking = await conn.execute(
        sa.select(s.merchant_id, s.order_no, s.sku, sa.null(), s.quantity)
        .select_from(sync_execution_lines)
        .outerjoin(restock_lines, same_line)
        .where(of(sync_execution_lines), r.order_no.is_(None), recorded.exists())
    )
    lines = sorted([*differing, *lacking], key=lambda row: (row[0], row[1], row[2]))
    return [
        f"{_at(at)}restock {order_no} sku {sku}: "
        f"{'no line' if line is None else f'line of {line}'} "
        f"but the order's sync execution has {'none' if snap is None else snap}"
        for at, order_no, sku, line, snap in lines
    ]
