-- $1 merchant, $2 sku, $3 after_id, $4 limit
SELECT m.id, m.sku, m.delta, m.quantity_after, m.reason, m.order_no, m.at, m.note, m.actor
FROM stock_movements m
WHERE m.merchant_id = $1 AND m.sku = $2 AND m.id > $3
ORDER BY m.id
LIMIT $4
