-- $1 merchant, $2 owner, $3 key
SELECT fingerprint, created_at, expires_at, receipt FROM idempotency_keys
WHERE merchant_id = $1 AND owner = $2 AND key = $3
