-- Drop this request's claim, unless an answer was stored under it.
DELETE FROM idempotency_keys
WHERE owner = :owner AND key = :key AND token = :token AND status IS NULL
