-- Read what rules.decide needs for each order of :order_nos, and, when every order is in the
-- one state that the rules restore, restore them all in this same statement.
-- One row per snapshot line (one for an order without a snapshot); `applied` says whether
-- this statement restored the batch. tests/test_pg_statements.py holds `candidate` and
-- `guard` to rules.decide.
WITH looked_up AS MATERIALIZED (  -- each order's record and execution, looked up by key
  SELECT o.order_no, o.ord,
         (SELECT r.status FROM restocks r
          WHERE r.merchant_id = :merchant AND r.order_no = o.order_no) AS status,
         (SELECT e.mall FROM sync_executions e
          WHERE e.merchant_id = :merchant AND e.order_no = o.order_no) AS mall
  FROM unnest(:order_nos::text[]) WITH ORDINALITY AS o(order_no, ord)
  WHERE {key_gate}
), orders AS MATERIALIZED (  -- a candidate is not recorded and was synced from :mall
  SELECT l.*, l.status IS NULL AND l.mall IS NOT DISTINCT FROM :mall::text AS candidate
  FROM looked_up l
), snapshot AS MATERIALIZED (  -- the synced lines of every order, looked up by key
  SELECT o.order_no, o.ord, o.candidate, l.sku, l.quantity, l.position
  FROM orders o
  CROSS JOIN LATERAL (
    SELECT sku, quantity, position FROM sync_execution_lines
    WHERE merchant_id = :merchant AND order_no = o.order_no
    OFFSET 0  -- a lookup per order, not a join the planner may turn into a scan
  ) l
), locked AS MATERIALIZED (  -- the registered skus of candidates, locked in sku order
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM snapshot WHERE candidate ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = :merchant AND s.sku = c.sku FOR UPDATE) k
), guard AS MATERIALIZED (  -- ok only if every order is a candidate with every sku registered
  SELECT coalesce(bool_and(o.candidate), false)
     AND NOT EXISTS (SELECT FROM snapshot l LEFT JOIN locked k ON k.sku = l.sku
                     WHERE k.sku IS NULL) AS ok
  FROM orders o
), claimed AS (  -- at most one record per order: the primary key decides
  INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,
                        completed_at, repeat_requests)
  SELECT :merchant, o.order_no, :mall, 'restored', 'restored', :now, :now, 0
  FROM orders o, guard g
  WHERE g.ok
  ORDER BY o.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (  -- the claimed records' lines, numbered from 0
  INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT :merchant, l.order_no, l.sku,
         row_number() OVER (PARTITION BY l.order_no ORDER BY l.position) - 1, l.quantity, false
  FROM snapshot l JOIN claimed USING (order_no)
), moves AS (  -- the claimed orders' lines, added back in request order
  SELECT l.sku, l.quantity::bigint AS delta, l.order_no,
         row_number() OVER (ORDER BY l.ord, l.position) AS rank
  FROM snapshot l JOIN claimed USING (order_no)
),
-- include: move_stock.sql
-- rows kept when: (SELECT ok FROM guard)
SELECT o.order_no, o.status, o.mall, l.sku, l.quantity, k.sku IS NOT NULL AS registered,
       g.ok AS applied
FROM orders o
CROSS JOIN guard g
LEFT JOIN snapshot l ON l.order_no = o.order_no
LEFT JOIN locked k ON k.sku = l.sku
-- another request recorded one of the orders first: run the whole statement again
WHERE restock_retry_if(g.ok AND (SELECT count(*) FROM claimed) < cardinality(:order_nos::text[]))
ORDER BY o.order_no, l.position
