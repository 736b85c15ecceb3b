-- $1 merchant, $2 sku, $3 quantity, $4 now, $5 actor
WITH old AS MATERIALIZED (
  SELECT quantity FROM stock
  WHERE merchant_id = $1 AND sku = $2 AND true
  FOR UPDATE
), put AS (
  INSERT INTO stock AS s (merchant_id, sku, quantity, created_at, updated_at)
  SELECT $1, $2, $3::bigint, $4::timestamptz, $4::timestamptz
  FROM (SELECT count(*) FROM old) AS read_first
  WHERE true
  ON CONFLICT (merchant_id, sku)
  DO UPDATE SET quantity = excluded.quantity, updated_at = excluded.updated_at
  RETURNING s.sku, s.quantity, s.updated_at, s.xmax = 0 AS inserted
), ledger AS (
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT $1, sku, quantity - coalesce((SELECT quantity FROM old), 0), quantity, 'set',
         updated_at, pg_current_xact_id()::text::bigint, $5
  FROM put
)
SELECT sku, quantity, updated_at
FROM put
WHERE restock_retry_if(NOT inserted AND NOT EXISTS (SELECT FROM old))
