-- $1 merchant, $2 skus
SELECT sku, quantity FROM stock WHERE merchant_id = $1 AND sku = ANY($2::text[])
