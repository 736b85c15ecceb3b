-- What holds the caller's key at the merchant, as it stands.
SELECT fingerprint, created_at, expires_at, receipt FROM idempotency_keys
WHERE merchant_id = :merchant AND owner = :owner AND key = :key
