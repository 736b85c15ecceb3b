"""The restock hot path on PostgreSQL: the same steps as restock.py, in fewer round trips.

Plain SQL with array parameters (``unnest``), run on the asyncpg driver (see
``Database.write_driver``): no statement is compiled per request, and a whole batch costs
the same statements as a single order: read-and-lock, write (claim + lines + stock + ledger
in one statement of writable CTEs), and count repeats when there are any. SQLite takes the
portable path in restock.py.
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

# The orders' records and snapshots, with the stock rows of the orders that may be restored
# (same mall, not yet recorded) locked in sku order (a materialized CTE, so the locks are
# taken whatever the outer query reads). An order recorded meanwhile is caught by the claim.
LOAD_AND_LOCK = """
WITH locked AS MATERIALIZED (
  SELECT s.sku, s.quantity FROM stock s
  WHERE s.sku IN (
    SELECT l.sku
    FROM sync_executions e JOIN sync_execution_lines l ON l.order_no = e.order_no
    WHERE e.order_no = ANY($1::text[]) AND e.mall = $2
      AND NOT EXISTS (SELECT 1 FROM restocks r WHERE r.order_no = e.order_no)
  )
  ORDER BY s.sku
  FOR UPDATE OF s
)
SELECT o.order_no, r.status, e.mall, l.sku, l.quantity, k.sku IS NOT NULL AS registered
FROM unnest($1::text[]) AS o(order_no)
LEFT JOIN restocks r ON r.order_no = o.order_no
LEFT JOIN sync_executions e ON e.order_no = o.order_no
LEFT JOIN sync_execution_lines l ON l.order_no = e.order_no
LEFT JOIN locked k ON k.sku = l.sku
ORDER BY o.order_no, l.position
"""

# $1..$3 the new records (order, status, code), $4 the time, $5 the mall;
# $6..$10 their lines; $11..$14 the restored lines as moves (sku, delta, order, rank).
# Only what the INSERT … ON CONFLICT claims is written: an order another transaction
# recorded first moves no stock here.
WRITE = """
WITH claimed AS (
  INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at,
                        repeat_requests)
  SELECT n.order_no, $5, n.status, n.code, $4, $4, 0
  FROM unnest($1::text[], $2::text[], $3::text[]) AS n(order_no, status, code)
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
)
SELECT order_no FROM claimed
"""

COUNT_REPEATS = """
UPDATE restocks SET repeat_requests = repeat_requests + 1
WHERE order_no = ANY($1::text[])
RETURNING order_no, status
"""


async def apply(
    driver: Any, mall: Mall, order_nos: Sequence[str], now: datetime
) -> dict[str, Decision]:
    """Decide the orders and apply rule 8 once per order, inside the caller's transaction."""
    recorded: dict[str, RestockStatus] = {}
    malls: dict[str, Mall] = {}
    lines: dict[str, list[Line]] = {}
    registered: set[str] = set()
    for order_no, status, order_mall, sku, quantity, is_registered in await driver.fetch(
        LOAD_AND_LOCK, list(order_nos), mall.value
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
    claimed = await _write(driver, mall, new, order_nos, now)
    repeats = [n for n in order_nos if n in recorded or (n in new and n not in claimed)]
    if repeats:
        for order_no, status in await driver.fetch(COUNT_REPEATS, sorted(repeats)):
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
) -> set[str]:
    """Claim the new records; for those won, write lines, stock and ledger. Returns the won."""
    if not new:
        return set()
    order_nos = sorted(new)
    lines = record_lines(new)
    moves = restock_moves([n for n in order_nos_in_request if n in new], new)
    rows = await driver.fetch(
        WRITE,
        order_nos,
        [RECORDED_STATUS[new[n].code].value for n in order_nos],
        [new[n].code.value for n in order_nos],
        now,
        mall.value,
        *_columns(lines, 5),
        *_columns(moves, 3),
        list(range(len(moves))),
    )
    return {row[0] for row in rows}


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
