-- $1 merchant, $2 owner, $3 key, $4 created_at
DELETE FROM idempotency_keys
WHERE merchant_id = $1 AND owner = $2 AND key = $3 AND created_at = $4
