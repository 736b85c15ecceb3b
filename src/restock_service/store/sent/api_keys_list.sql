-- $1 merchant_id
SELECT merchant_id, name, role, created_at, last_used_at FROM api_keys
WHERE revoked_at IS NULL AND ($1::text IS NULL OR merchant_id = $1)
ORDER BY merchant_id, name
