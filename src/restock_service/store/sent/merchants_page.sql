-- $1 after_id, $2 limit
SELECT merchant_id, name, created_at FROM merchants
WHERE merchant_id > coalesce($1::text, '')
ORDER BY merchant_id
LIMIT $2
