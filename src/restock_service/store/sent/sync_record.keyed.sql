-- $1 merchant, $2 key_owner, $3 key, $4 order_nos, $5 malls, $6 executed_ats, $7 item_order_nos, $8 item_skus, $9 item_positions, $10 item_quantities, $11 now, $12 reason, $13 actor, $14 key_fingerprint, $15 key_expires_at, $16 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), batch AS (
  SELECT * FROM unnest($4::text[], $5::text[], $6::timestamptz[])
                WITH ORDINALITY AS e(order_no, mall, executed_at, ord)
  WHERE (SELECT ok FROM key_gate)
), items AS (
  SELECT * FROM unnest($7::text[], $8::text[], $9::int[],
                       $10::int[])
                WITH ORDINALITY AS i(order_no, sku, position, quantity, rank)
  WHERE (SELECT ok FROM key_gate)
), locked AS MATERIALIZED (
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM items ORDER BY sku) i
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = $1 AND s.sku = i.sku FOR UPDATE) k
), complete AS MATERIALIZED (
  SELECT b.* FROM batch b
  WHERE NOT EXISTS (SELECT FROM items i LEFT JOIN locked k ON k.sku = i.sku
                    WHERE i.order_no = b.order_no AND k.sku IS NULL)
), claimed AS (
  INSERT INTO sync_executions (merchant_id, order_no, mall, executed_at, recorded_at)
  SELECT $1, order_no, mall, executed_at, $11 FROM complete ORDER BY order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO sync_execution_lines (merchant_id, order_no, sku, position, quantity)
  SELECT $1, i.order_no, i.sku, i.position, i.quantity FROM items i JOIN claimed USING (order_no)
), moves AS (
  SELECT i.sku, -i.quantity::bigint AS delta, i.order_no, i.rank
  FROM items i JOIN claimed USING (order_no)
),
updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $11
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
         $12, m.order_no, $11, pg_current_xact_id()::text::bigint, $13
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
), key_rows AS MATERIALIZED (
SELECT b.order_no,
       EXISTS (SELECT FROM claimed c WHERE c.order_no = b.order_no) AS recorded,
       EXISTS (SELECT FROM sync_executions e
               WHERE e.merchant_id = $1 AND e.order_no = b.order_no) AS existed,
       ARRAY(SELECT i.sku FROM items i LEFT JOIN locked k ON k.sku = i.sku
             WHERE i.order_no = b.order_no AND k.sku IS NULL ORDER BY i.rank) AS missing
FROM batch b
ORDER BY b.ord
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $14, $11, $15,
         convert_to($16::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
