"""The few statements whose best form differs between PostgreSQL and SQLite.

Everything dialect-specific lives here, so the services read the same on both.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service.tables import stock, stock_movements


def one_of(
    conn: AsyncConnection, column: sa.ColumnElement[str], values: Iterable[str]
) -> sa.ColumnElement[bool]:
    """``column IN values`` as a single bound parameter, whatever the number of values."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(sa.String)))
    members = sa.select(sa.column("value", sa.String)).select_from(
        sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.String))
    )
    return column.in_(members.scalar_subquery())


def upsert(conn: AsyncConnection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT, the one that has ``ON CONFLICT``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignoring_conflicts(
    conn: AsyncConnection, table: sa.Table
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that skips rows whose key already exists (``ON CONFLICT DO NOTHING``)."""
    return upsert(conn, table).on_conflict_do_nothing()


async def register_and_lock(conn: AsyncConnection, sku: str, at: datetime) -> dict[str, int]:
    """Register ``sku`` at quantity 0 unless it exists; lock its row; return its quantity.

    One upsert, so a concurrent DELETE cannot slip between "exists" and "locked".
    """
    statement = upsert(conn, stock).values(sku=sku, quantity=0, created_at=at, updated_at=at)
    quantity = (
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[stock.c.sku], set_={"updated_at": statement.excluded.updated_at}
            ).returning(stock.c.quantity)
        )
    ).scalar_one()
    return {sku: quantity}


async def lock_stock(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """Lock the registered rows among ``skus`` in sku order; return their quantities.

    The fixed order means two transactions that touch the same skus cannot deadlock. On
    SQLite the whole database is already locked by BEGIN IMMEDIATE.
    """
    wanted = sorted(set(skus))
    if not wanted:
        return {}
    rows = await conn.execute(
        sa.select(stock.c.sku, stock.c.quantity)
        .where(one_of(conn, stock.c.sku, wanted))
        .order_by(stock.c.sku)
        .with_for_update()
    )
    return {sku: quantity for sku, quantity in rows}


def writing_txid(conn: AsyncConnection) -> sa.ColumnElement[int] | int:
    """The writing transaction's id on PostgreSQL; 0 on SQLite, whose writers take turns."""
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.cast(sa.func.pg_current_xact_id(), sa.Text), sa.BigInteger)
    return 0


def feed_horizon(conn: AsyncConnection) -> sa.ColumnElement[int] | None:
    """Transactions below this id have all ended: their ledger rows can no longer appear.

    Ledger ids are handed out before commit, so on PostgreSQL a row with a lower id can
    become visible after one with a higher id. Reading only rows of transactions older than
    the snapshot's xmin, in (txid, id) order, means no row can later appear behind a cursor.
    On SQLite writers are serialized, so ids are already in commit order.
    """
    if conn.dialect.name == "postgresql":
        xmin = sa.func.pg_snapshot_xmin(sa.func.pg_current_snapshot())
        return sa.cast(sa.cast(xmin, sa.Text), sa.BigInteger)
    return None


def ledger_insert(conn: AsyncConnection) -> sa.Insert:
    """The INSERT for ledger rows, stamped with the writing transaction's id."""
    return sa.insert(stock_movements).values(txid=writing_txid(conn))


async def move_stock(
    conn: AsyncConnection,
    moves: Sequence[tuple[str, int, str | None]],
    *,
    current: Mapping[str, int],
    reason: str,
    at: datetime,
    note: str | None = None,
) -> dict[str, int]:
    """Apply ``(sku, delta, order_no)`` moves to locked skus and write one ledger row each.

    ``current`` holds the locked quantities; returns the quantities after the moves.
    """
    after = dict(current)
    ledger = []
    for sku, delta, order_no in moves:
        after[sku] += delta
        ledger.append(
            {
                "sku": sku,
                "delta": delta,
                "quantity_after": after[sku],
                "reason": reason,
                "order_no": order_no,
                "at": at,
                "note": note,
            }
        )
    if not ledger:
        return after
    totals: dict[str, int] = {}
    for sku, delta, _ in moves:
        totals[sku] = totals.get(sku, 0) + delta
    await conn.execute(
        sa.update(stock)
        .where(stock.c.sku == sa.bindparam("b_sku"))
        .values(quantity=stock.c.quantity + sa.bindparam("b_delta"), updated_at=at),
        [{"b_sku": sku, "b_delta": delta} for sku, delta in sorted(totals.items())],
    )
    await conn.execute(ledger_insert(conn), ledger)
    return after
