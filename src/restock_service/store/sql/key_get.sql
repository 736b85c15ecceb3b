-- What holds the caller's key, as it stands.
SELECT fingerprint, locked_until, created_at, expires_at, receipt FROM idempotency_keys
WHERE owner = :owner AND key = :key
