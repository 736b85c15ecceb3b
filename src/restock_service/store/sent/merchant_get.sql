-- $1 merchant_id
SELECT merchant_id, name, created_at FROM merchants WHERE merchant_id = $1
