"""The restock hot path on PostgreSQL: the same rules as restock.py, in two statements.

Plain SQL with array parameters (``unnest``), run on the asyncpg driver (see
``Database.write_driver``), each statement its own transaction:

1. LOAD reads the orders' records, snapshots and which skus are registered, without locks;
2. the rules decide, in Python;
3. WRITE does all the writing in one statement: it locks the skus it will move in sku order,
   checks that the registered ones are still exactly those LOAD saw, claims the new records
   with ``INSERT … ON CONFLICT DO NOTHING`` (the primary key on ``restocks.order_no`` makes a
   restock happen at most once), writes their lines, stock and ledger, and counts the
   repeats. If a sku was registered or removed since LOAD, or another request recorded one
   of the orders first, it calls ``restock_retry_if(true)`` (migration 0003), which fails
   the whole statement with a serialization failure: nothing is written, and the caller
   runs both statements again, now seeing what changed.

A batch costs these two statements whatever its size. SQLite takes the portable path in
restock.py (one ``BEGIN IMMEDIATE`` transaction).
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from restock_service.messages import RECORDED_STATUS, Mall, RestockStatus
from restock_service.rules import (
    Decision,
    Line,
    Snapshot,
    decide_orders,
    decide_repeat,
    record_lines,
    restock_moves,
)

LOAD = """
SELECT o.order_no, r.status, e.mall, l.sku, l.quantity, s.sku IS NOT NULL AS registered
FROM unnest($1::text[]) AS o(order_no)
LEFT JOIN restocks r ON r.order_no = o.order_no
LEFT JOIN sync_executions e ON e.order_no = o.order_no
LEFT JOIN sync_execution_lines l ON l.order_no = e.order_no
LEFT JOIN stock s ON s.sku = l.sku
ORDER BY o.order_no, l.position
"""

# $1..$3 the new records (order, status, code), $4 the time, $5 the mall;
# $6..$10 their lines; $11..$14 the restored lines as moves (sku, delta, order, rank);
# $15 the skus the new records' decisions read, $16 those of them that were registered;
# $17 the orders recorded before, whose repeats are counted.
# The skus are locked first (``unchanged`` reads ``locked``; ``claimed`` and ``repeated``
# read ``unchanged``), in sku order like every other writer of stock.
WRITE = """
WITH locked AS MATERIALIZED (
  SELECT s.sku FROM stock s WHERE s.sku = ANY($15::text[]) ORDER BY s.sku FOR UPDATE
), unchanged AS (
  SELECT coalesce(array_agg(sku::text), '{}') @> $16::text[]
     AND $16::text[] @> coalesce(array_agg(sku::text), '{}') AS ok
  FROM locked
), claimed AS (
  INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at,
                        repeat_requests)
  SELECT n.order_no, $5, n.status, n.code, $4, $4, 0
  FROM unnest($1::text[], $2::text[], $3::text[]) AS n(order_no, status, code), unchanged u
  WHERE u.ok
  ORDER BY n.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO restock_lines (order_no, sku, position, quantity, missing)
  SELECT l.order_no, l.sku, l.position, l.quantity, l.missing
  FROM unnest($6::text[], $7::text[], $8::int[], $9::int[], $10::bool[])
       AS l(order_no, sku, position, quantity, missing)
  JOIN claimed USING (order_no)
), moves AS (
  SELECT m.sku, m.delta, m.order_no, m.rank
  FROM unnest($11::text[], $12::bigint[], $13::text[], $14::int[])
       AS m(sku, delta, order_no, rank)
  JOIN claimed USING (order_no)
), updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $4
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements (sku, delta, quantity_after, reason, order_no, at, txid)
  SELECT m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         'restock', m.order_no, $4, pg_current_xact_id()::text::bigint
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
), repeated AS (
  UPDATE restocks r SET repeat_requests = r.repeat_requests + 1
  FROM unchanged u
  WHERE u.ok AND r.order_no = ANY($17::text[])
  RETURNING r.order_no, r.status
)
SELECT r.order_no, r.status
FROM unchanged u
LEFT JOIN repeated r ON true
WHERE restock_retry_if(NOT u.ok OR (SELECT count(*) FROM claimed) < cardinality($1::text[]))
"""


async def apply(
    driver: Any, mall: Mall, order_nos: Sequence[str], now: datetime
) -> dict[str, Decision]:
    """Decide the orders and apply rule 8 once per order, in two statements.

    Raises asyncpg's SerializationError when what LOAD read changed before WRITE; nothing
    is written then, and the caller runs it again.
    """
    recorded: dict[str, RestockStatus] = {}
    malls: dict[str, Mall] = {}
    lines: dict[str, list[Line]] = {}
    registered: set[str] = set()
    for order_no, status, order_mall, sku, quantity, is_registered in await driver.fetch(
        LOAD, list(order_nos)
    ):
        if status is not None:
            recorded[order_no] = RestockStatus(status)
        if order_mall is not None:
            malls[order_no] = Mall(order_mall)
            lines.setdefault(order_no, []).append(Line(sku, quantity))
            if is_registered:
                registered.add(sku)
    snapshots = {n: Snapshot(malls[n], tuple(ls)) for n, ls in lines.items()}
    decisions = decide_orders(mall, order_nos, recorded, snapshots, registered)

    new = {n: d for n, d in decisions.items() if d.code in RECORDED_STATUS}
    # The skus the new records' decisions rest on: those of orders that may be restored.
    read = sorted(
        {
            line.sku
            for n in new
            if n in snapshots and snapshots[n].mall == mall
            for line in snapshots[n].lines
        }
    )
    for order_no, status in await _write(
        driver, mall, new, order_nos, now, read, [s for s in read if s in registered], recorded
    ):
        if order_no is not None:
            decisions[order_no] = decide_repeat(RestockStatus(status), snapshots.get(order_no))
    return decisions


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns: one array per ``unnest`` parameter."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def _write(
    driver: Any,
    mall: Mall,
    new: Mapping[str, Decision],
    order_nos_in_request: Sequence[str],
    now: datetime,
    read_skus: list[str],
    registered_skus: list[str],
    recorded: Mapping[str, RestockStatus],
) -> list[Any]:
    """Write the new records and count the repeats; returns the repeats' (order, status)."""
    order_nos = sorted(new)
    moves = restock_moves([n for n in order_nos_in_request if n in new], new)
    return list(
        await driver.fetch(
            WRITE,
            order_nos,
            [RECORDED_STATUS[new[n].code].value for n in order_nos],
            [new[n].code.value for n in order_nos],
            now,
            mall.value,
            *_columns(record_lines(new), 5),
            *_columns(moves, 3),
            list(range(len(moves))),
            read_skus,
            registered_skus,
            sorted(recorded),
        )
    )


RECORD = """
SELECT r.order_no, r.mall, r.status, r.code, r.requested_at, r.completed_at,
       r.repeat_requests, r.resolution_note, r.resolved_by, r.resolved_at,
       l.sku, l.quantity, l.missing
FROM restocks r LEFT JOIN restock_lines l ON l.order_no = r.order_no
WHERE r.order_no = $1
ORDER BY l.position
"""


async def record(driver: Any, order_no: str) -> list[Any]:
    """The record and its lines, one row per line, in one statement."""
    return list(await driver.fetch(RECORD, order_no))
