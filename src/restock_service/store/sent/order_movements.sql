-- $1 merchant, $2 order_no
SELECT m.id, m.sku, m.delta, m.quantity_after, m.reason, m.order_no, m.at, m.note, m.actor
FROM stock_movements m
WHERE m.merchant_id = $1
  AND m.sku IN (SELECT sku FROM sync_execution_lines
                WHERE merchant_id = $1 AND order_no = $2
                UNION
                SELECT sku FROM restock_lines
                WHERE merchant_id = $1 AND order_no = $2)
  AND m.order_no = $2
ORDER BY m.id
