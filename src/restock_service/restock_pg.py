"""The restock hot path on PostgreSQL: the same rules as restock.py, in one or two statements.

Plain SQL with array parameters (``unnest``), run on the asyncpg driver (see
``Database.write_driver``), each statement its own transaction:

1. LOAD_OR_RESTORE reads the orders' records and snapshots, and locks the registered skus of
   the orders that may be restored (not recorded, synced from the request's mall), in sku
   order. If every order is in the one state that rules.decide
   restores (no record yet, synced from the request's mall, every sku registered), the same
   statement restores them all: it claims the records with ``INSERT … ON CONFLICT DO
   NOTHING`` (the primary key on ``restocks.order_no`` makes a restock happen at most once)
   and writes their lines, stock and ledger. Its rows are what it read, and whether it
   restored.
2. The rules decide, in Python, on what it read. When the statement restored, they must
   have decided ``restored`` for every order: the request is done, in one statement.
3. Otherwise WRITE does the writing the rules decided, in one statement: it locks the skus
   it will move in sku order, checks that the registered ones are still exactly those read,
   claims the new records, writes their lines, stock and ledger, and counts the repeats.

Either statement calls ``restock_retry_if(true)`` (migration 0003) when the world moved
under it: another request recorded one of the orders first, or (WRITE) a sku was registered
or removed since it was read. That fails the whole statement with a serialization failure:
nothing is written, and the caller runs it all again, now seeing what changed.

A batch costs one statement when all its orders are restored, two otherwise, whatever its
size. SQLite takes the portable path in restock.py (one ``BEGIN IMMEDIATE`` transaction).
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from restock_service.messages import RECORDED_STATUS, Code, Mall, RestockStatus
from restock_service.rules import (
    Decision,
    Line,
    Snapshot,
    decide_orders,
    decide_repeat,
    record_lines,
    restock_moves,
)


def _move_stock(now: str) -> str:
    """The CTEs that add a ``moves`` CTE (sku, delta, order_no, rank) to stock and write the
    ledger in rank order, each row with the quantity it left; ``now`` is the time parameter."""
    return f"""updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = {now}
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements (sku, delta, quantity_after, reason, order_no, at, txid)
  SELECT m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         'restock', m.order_no, {now}, pg_current_xact_id()::text::bigint
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
"""


# $1 the orders in request order, $2 the mall, $3 the time. One row per snapshot line (one
# for an order without a snapshot), with whether its sku is registered, read under lock (for
# the orders that may be restored: the rules look at no other order's skus); and
# ``applied``: whether every order was restorable, and so restored. The restorable state is
# rules.decide's for ``restored``: tests/test_hot_write.py holds the two to each other.
LOAD_OR_RESTORE = f"""
WITH orders AS MATERIALIZED (  -- a candidate: not recorded, synced from the request's mall
  SELECT o.order_no, o.ord, r.status, e.mall,
         r.status IS NULL AND e.mall IS NOT DISTINCT FROM $2::text AS candidate
  FROM unnest($1::text[]) WITH ORDINALITY AS o(order_no, ord)
  LEFT JOIN restocks r ON r.order_no = o.order_no
  LEFT JOIN sync_executions e ON e.order_no = o.order_no
), snapshot AS MATERIALIZED (
  SELECT o.order_no, o.ord, o.candidate, l.sku, l.quantity, l.position
  FROM orders o JOIN sync_execution_lines l ON l.order_no = o.order_no
), locked AS MATERIALIZED (  -- only the skus whose registration the rules look at
  SELECT s.sku
  FROM (SELECT DISTINCT sku FROM snapshot WHERE candidate) c JOIN stock s ON s.sku = c.sku
  ORDER BY s.sku FOR UPDATE OF s
), guard AS MATERIALIZED (  -- every order a candidate, every sku of theirs registered
  SELECT coalesce(bool_and(o.candidate), false)
     AND NOT EXISTS (SELECT FROM snapshot l LEFT JOIN locked k ON k.sku = l.sku
                     WHERE k.sku IS NULL) AS ok
  FROM orders o
), claimed AS (
  INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at,
                        repeat_requests)
  SELECT o.order_no, $2, '{RestockStatus.RESTORED.value}', '{Code.RESTORED.value}', $3, $3, 0
  FROM orders o, guard g
  WHERE g.ok
  ORDER BY o.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO restock_lines (order_no, sku, position, quantity, missing)
  SELECT l.order_no, l.sku,
         row_number() OVER (PARTITION BY l.order_no ORDER BY l.position) - 1, l.quantity, false
  FROM snapshot l JOIN claimed USING (order_no)
), moves AS (
  SELECT l.sku, l.quantity::bigint AS delta, l.order_no,
         row_number() OVER (ORDER BY l.ord, l.position) AS rank
  FROM snapshot l JOIN claimed USING (order_no)
), {_move_stock("$3")})
SELECT o.order_no, o.status, o.mall, l.sku, l.quantity, k.sku IS NOT NULL AS registered,
       g.ok AS applied
FROM orders o
CROSS JOIN guard g
LEFT JOIN snapshot l ON l.order_no = o.order_no
LEFT JOIN locked k ON k.sku = l.sku
WHERE restock_retry_if(g.ok AND (SELECT count(*) FROM claimed) < cardinality($1::text[]))
ORDER BY o.order_no, l.position
"""

# $1..$3 the new records (order, status, code), $4 the time, $5 the mall;
# $6..$10 their lines; $11..$14 the restored lines as moves (sku, delta, order, rank);
# $15 the skus the new records' decisions read, $16 those of them that were registered;
# $17 the orders recorded before, whose repeats are counted.
# The skus are locked first (``unchanged`` reads ``locked``; ``claimed`` and ``repeated``
# read ``unchanged``), in sku order like every other writer of stock.
#
# Both statements lock by joining the skus to ``stock``, not with ``sku = ANY(array)``: a
# row that a concurrent batch changed is rechecked when the lock is granted, and under a
# bitmap scan that recheck tested the whole array again, for each row. Two overlapping
# 1,000-order batches then took over a second each instead of about 0.1 s.
WRITE = f"""
WITH locked AS MATERIALIZED (
  SELECT s.sku FROM unnest($15::text[]) AS c(sku) JOIN stock s ON s.sku = c.sku
  ORDER BY s.sku FOR UPDATE OF s
), unchanged AS (
  SELECT coalesce(array_agg(sku::text), '{{}}') @> $16::text[]
     AND $16::text[] @> coalesce(array_agg(sku::text), '{{}}') AS ok
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
), {_move_stock("$4")}), repeated AS (
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
    """Decide the orders and apply rule 8 once per order, in one statement or two.

    Raises asyncpg's SerializationError when what was read changed before the writing;
    nothing is written then, and the caller runs it again.
    """
    if not order_nos:
        return {}
    recorded: dict[str, RestockStatus] = {}
    malls: dict[str, Mall] = {}
    lines: dict[str, list[Line]] = {}
    registered: set[str] = set()
    rows = await driver.fetch(LOAD_OR_RESTORE, list(order_nos), mall.value, now)
    for order_no, status, order_mall, sku, quantity, is_registered, _ in rows:
        if status is not None:
            recorded[order_no] = RestockStatus(status)
        if order_mall is not None:
            malls[order_no] = Mall(order_mall)
            order_lines = lines.setdefault(order_no, [])
            if sku is not None:  # (the API never records a sync execution without lines)
                order_lines.append(Line(sku, quantity))
                if is_registered:
                    registered.add(sku)
    snapshots = {n: Snapshot(malls[n], tuple(ls)) for n, ls in lines.items()}
    decisions = decide_orders(mall, order_nos, recorded, snapshots, registered)
    if rows[0]["applied"]:
        if any(d.code is not Code.RESTORED for d in decisions.values()):  # a defect, not input
            raise RuntimeError(f"restored what the rules do not restore: {decisions}")
        return decisions

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
