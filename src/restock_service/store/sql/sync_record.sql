-- Record a batch of sync executions, each atomically with its lines, its stock deductions and
-- its ledger rows: an order is recorded only if it has no execution yet and every sku of it
-- is registered. One row per execution, in request order: whether this statement recorded
-- it, whether an execution existed before, and its unregistered skus in item order.
WITH batch AS (  -- the executions, in request order
  SELECT * FROM unnest(:order_nos::text[], :malls::text[], :executed_ats::timestamptz[])
                WITH ORDINALITY AS e(order_no, mall, executed_at, ord)
  WHERE {key_gate}
), items AS (  -- their lines, in request order
  SELECT * FROM unnest(:item_order_nos::text[], :item_skus::text[], :item_positions::int[],
                       :item_quantities::int[])
                WITH ORDINALITY AS i(order_no, sku, position, quantity, rank)
  WHERE {key_gate}
), locked AS MATERIALIZED (  -- the registered skus of the batch, locked in sku order, by key
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM items ORDER BY sku) i
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = :merchant AND s.sku = i.sku FOR UPDATE) k
), complete AS MATERIALIZED (  -- the executions whose every sku is registered
  SELECT b.* FROM batch b
  WHERE NOT EXISTS (SELECT FROM items i LEFT JOIN locked k ON k.sku = i.sku
                    WHERE i.order_no = b.order_no AND k.sku IS NULL)
), claimed AS (  -- at most one execution per order: the primary key decides
  INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)
  SELECT :merchant, order_no, mall, executed_at, :now FROM complete ORDER BY order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (  -- the claimed executions' lines
  INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
  SELECT :merchant, i.order_no, i.sku, i.position, i.quantity FROM items i JOIN claimed USING (order_no)
), moves AS (  -- the claimed executions' lines, deducted in request order
  SELECT i.sku, -i.quantity::bigint AS delta, i.order_no, i.rank
  FROM items i JOIN claimed USING (order_no)
),
-- include: move_stock.sql
-- rows
SELECT b.order_no,
       EXISTS (SELECT FROM claimed c WHERE c.order_no = b.order_no) AS recorded,
       EXISTS (SELECT FROM sync_executions e
               WHERE e.merchant_id = :merchant AND e.order_no = b.order_no) AS existed,
       ARRAY(SELECT i.sku FROM items i LEFT JOIN locked k ON k.sku = i.sku
             WHERE i.order_no = b.order_no AND k.sku IS NULL ORDER BY i.rank) AS missing
FROM batch b
ORDER BY b.ord
