-- $1 merchant, $2 sku
SELECT sku, quantity, updated_at FROM stock WHERE merchant_id = $1 AND sku = $2
