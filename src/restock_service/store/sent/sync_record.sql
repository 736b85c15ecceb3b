-- $1 order_nos, $2 malls, $3 executed_ats, $4 item_order_nos, $5 item_skus, $6 item_positions, $7 item_quantities, $8 merchant, $9 now, $10 reason, $11 actor
WITH batch AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                WITH ORDINALITY AS e(order_no, mall, executed_at, ord)
  WHERE true
), items AS (
  SELECT * FROM unnest($4::text[], $5::text[], $6::int[],
                       $7::int[])
                WITH ORDINALITY AS i(order_no, sku, position, quantity, rank)
  WHERE true
), locked AS MATERIALIZED (
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM items ORDER BY sku) i
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = $8 AND s.sku = i.sku FOR UPDATE) k
), complete AS MATERIALIZED (
  SELECT b.* FROM batch b
  WHERE NOT EXISTS (SELECT FROM items i LEFT JOIN locked k ON k.sku = i.sku
                    WHERE i.order_no = b.order_no AND k.sku IS NULL)
), claimed AS (
  INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)
  SELECT $8, order_no, mall, executed_at, $9 FROM complete ORDER BY order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
  SELECT $8, i.order_no, i.sku, i.position, i.quantity FROM items i JOIN claimed USING (order_no)
), moves AS (
  SELECT i.sku, -i.quantity::bigint AS delta, i.order_no, i.rank
  FROM items i JOIN claimed USING (order_no)
),
updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $9
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.merchant_id = $8 AND s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, actor)
  SELECT $8, m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         $10, m.order_no, $9, pg_current_xact_id()::text::bigint, $11
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
)
SELECT b.order_no,
       EXISTS (SELECT FROM claimed c WHERE c.order_no = b.order_no) AS recorded,
       EXISTS (SELECT FROM sync_executions e
               WHERE e.merchant_id = $8 AND e.order_no = b.order_no) AS existed,
       ARRAY(SELECT i.sku FROM items i LEFT JOIN locked k ON k.sku = i.sku
             WHERE i.order_no = b.order_no AND k.sku IS NULL ORDER BY i.rank) AS missing
FROM batch b
ORDER BY b.ord
