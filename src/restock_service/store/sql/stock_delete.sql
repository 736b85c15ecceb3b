-- Remove :sku from the inventory sync; the ledger takes its quantity down to 0.
-- One row when it was registered, none otherwise.
WITH gone AS (  -- the row, locked and removed by the delete itself
  DELETE FROM stock WHERE merchant_id = :merchant AND sku = :sku AND {key_gate}
  RETURNING sku, quantity
), ledger AS (  -- one row taking the quantity down to 0
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT :merchant, sku, -quantity, 0, 'delete', :now, pg_current_xact_id()::text::bigint,
         :actor
  FROM gone
)
-- rows
SELECT sku FROM gone
