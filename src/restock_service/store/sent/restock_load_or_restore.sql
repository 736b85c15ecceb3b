-- $1 merchant, $2 order_nos, $3 mall, $4 now, $5 reason, $6 actor
WITH looked_up AS MATERIALIZED (
  SELECT o.order_no, o.ord,
         (SELECT r.status FROM restocks r
          WHERE r.merchant_id = $1 AND r.order_no = o.order_no) AS status,
         (SELECT e.mall FROM sync_executions e
          WHERE e.merchant_id = $1 AND e.order_no = o.order_no) AS mall
  FROM unnest($2::text[]) WITH ORDINALITY AS o(order_no, ord)
  WHERE true
), orders AS MATERIALIZED (
  SELECT l.*, l.status IS NULL AND l.mall IS NOT DISTINCT FROM $3::text AS candidate
  FROM looked_up l
), snapshot AS MATERIALIZED (
  SELECT o.order_no, o.ord, o.candidate, l.sku, l.quantity, l.position
  FROM orders o
  CROSS JOIN LATERAL (
    SELECT sku, quantity, position FROM sync_execution_lines
    WHERE merchant_id = $1 AND order_no = o.order_no
    OFFSET 0
  ) l
), locked AS MATERIALIZED (
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM snapshot WHERE candidate ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = $1 AND s.sku = c.sku FOR UPDATE) k
), guard AS MATERIALIZED (
  SELECT coalesce(bool_and(o.candidate), false)
     AND NOT EXISTS (SELECT FROM snapshot l LEFT JOIN locked k ON k.sku = l.sku
                     WHERE k.sku IS NULL) AS ok
  FROM orders o
), claimed AS (
  INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,
                        completed_at, repeat_requests)
  SELECT $1, o.order_no, $3, 'restored', 'restored', $4, $4, 0
  FROM orders o, guard g
  WHERE g.ok
  ORDER BY o.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT $1, l.order_no, l.sku,
         row_number() OVER (PARTITION BY l.order_no ORDER BY l.position) - 1, l.quantity, false
  FROM snapshot l JOIN claimed USING (order_no)
), moves AS (
  SELECT l.sku, l.quantity::bigint AS delta, l.order_no,
         row_number() OVER (ORDER BY l.ord, l.position) AS rank
  FROM snapshot l JOIN claimed USING (order_no)
),
updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $4
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.merchant_id = $1 AND s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, actor)
  SELECT $1, m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         $5, m.order_no, $4, pg_current_xact_id()::text::bigint, $6
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
)
SELECT o.order_no, o.status, o.mall, l.sku, l.quantity, k.sku IS NOT NULL AS registered,
       g.ok AS applied
FROM orders o
CROSS JOIN guard g
LEFT JOIN snapshot l ON l.order_no = o.order_no
LEFT JOIN locked k ON k.sku = l.sku
WHERE restock_retry_if(g.ok AND (SELECT count(*) FROM claimed) < cardinality($2::text[]))
ORDER BY o.order_no, l.position
