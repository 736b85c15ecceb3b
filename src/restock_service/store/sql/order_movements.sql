-- The ledger rows that name :order_no, oldest first. They are looked for among the rows of
-- the skus of its sync execution and its restock (the skus an order moves), through the
-- ledger's (merchant_id, sku, id) index: the ledger has no index on order_no, which every
-- write would pay for.
SELECT m.id, m.sku, m.delta, m.quantity_after, m.reason, m.order_no, m.at, m.note, m.actor
FROM stock_movements m
WHERE m.merchant_id = :merchant
  AND m.sku IN (SELECT sku FROM sync_execution_lines
                WHERE merchant_id = :merchant AND order_no = :order_no
                UNION
                SELECT sku FROM restock_lines
                WHERE merchant_id = :merchant AND order_no = :order_no)
  AND m.order_no = :order_no
ORDER BY m.id
