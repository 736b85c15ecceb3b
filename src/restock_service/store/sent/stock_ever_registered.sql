-- $1 merchant, $2 sku
SELECT EXISTS (SELECT FROM stock_movements WHERE merchant_id = $1 AND sku = $2)
