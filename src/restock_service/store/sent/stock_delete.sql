-- $1 merchant, $2 sku, $3 now, $4 actor
WITH gone AS (
  DELETE FROM stock WHERE merchant_id = $1 AND sku = $2 AND true
  RETURNING sku, quantity
), ledger AS (
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT $1, sku, -quantity, 0, 'delete', $3, pg_current_xact_id()::text::bigint,
         $4
  FROM gone
)
SELECT sku FROM gone
