-- The registered merchants after :after_id (or from the first, when null), by merchant_id.
SELECT merchant_id, name, created_at FROM merchants
WHERE merchant_id > coalesce(:after_id::text, '')
ORDER BY merchant_id
LIMIT :limit
