-- $1 delta, $2 now, $3 merchant, $4 sku, $5 limit, $6 order_no, $7 note, $8 actor
WITH moved AS (
  UPDATE stock SET quantity = quantity + $1, updated_at = $2
  WHERE merchant_id = $3 AND sku = $4 AND abs(quantity + $1) <= $5
    AND true
  RETURNING sku, quantity, updated_at
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, note, actor)
  SELECT $3, sku, $1, quantity, 'adjustment', $6, $2,
         pg_current_xact_id()::text::bigint, $7, $8
  FROM moved
)
SELECT sku, quantity, updated_at, true AS adjusted FROM moved
UNION ALL
SELECT sku, quantity, updated_at, false FROM stock
WHERE merchant_id = $3 AND sku = $4 AND NOT EXISTS (SELECT FROM moved)
