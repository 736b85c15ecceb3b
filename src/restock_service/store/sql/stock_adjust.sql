-- Add :delta to a registered sku by hand, unless the quantity would pass :limit either
-- way; the ledger records it with its reason. No row for an unknown sku.
WITH moved AS (  -- the row is locked by the update itself, and the bound checked under it
  UPDATE stock SET quantity = quantity + :delta, updated_at = :now
  WHERE merchant_id = :merchant AND sku = :sku AND abs(quantity + :delta) <= :limit
    AND {key_gate}
  RETURNING sku, quantity, updated_at
), ledger AS (  -- one row, with the quantity the adjustment left
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, note, actor)
  SELECT :merchant, sku, :delta, quantity, 'adjustment', :order_no, :now,
         pg_current_xact_id()::text::bigint, :note, :actor
  FROM moved
)
-- rows
SELECT sku, quantity, updated_at, true AS adjusted FROM moved
UNION ALL
-- refused by the bound: the stock as it stands
SELECT sku, quantity, updated_at, false FROM stock
WHERE merchant_id = :merchant AND sku = :sku AND NOT EXISTS (SELECT FROM moved)
