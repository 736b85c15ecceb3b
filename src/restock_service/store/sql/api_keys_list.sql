-- The keys in use at :merchant_id ('*': the platform's) by name; when it is null, every
-- merchant's and the platform's, by merchant and name. Never key material.
SELECT merchant_id, name, role, created_at, last_used_at FROM api_keys
WHERE revoked_at IS NULL AND (:merchant_id::text IS NULL OR merchant_id = :merchant_id)
ORDER BY merchant_id, name
