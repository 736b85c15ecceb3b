-- Register :sku at :quantity, or set its quantity; the ledger gets the difference.
WITH old AS MATERIALIZED (  -- the quantity before, locked (no row for a new sku)
  SELECT quantity FROM stock
  WHERE merchant_id = :merchant AND sku = :sku AND {key_gate}
  FOR UPDATE
), put AS (  -- register or set, after `old` was read (a row this statement changed is not read)
  INSERT INTO stock AS s (merchant_id, sku, quantity, created_at, updated_at)
  SELECT :merchant, :sku, :quantity::bigint, :now::timestamptz, :now::timestamptz
  FROM (SELECT count(*) FROM old) AS read_first
  WHERE {key_gate}
  ON CONFLICT (merchant_id, sku)
  DO UPDATE SET quantity = excluded.quantity, updated_at = excluded.updated_at
  RETURNING s.sku, s.quantity, s.updated_at, s.xmax = 0 AS inserted
), ledger AS (  -- the difference from the quantity before
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT :merchant, sku, quantity - coalesce((SELECT quantity FROM old), 0), quantity, 'set',
         updated_at, pg_current_xact_id()::text::bigint, :actor
  FROM put
)
-- rows
SELECT sku, quantity, updated_at
FROM put
-- registered by another request since `old` was read: run it again, to read what it set
WHERE restock_retry_if(NOT inserted AND NOT EXISTS (SELECT FROM old))
