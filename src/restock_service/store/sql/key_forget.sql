-- Remove the row of the caller's key as it was read (:created_at), once it holds nothing
-- (idempotency.state_of): a keyed statement may then take the key.
DELETE FROM idempotency_keys
WHERE merchant_id = :merchant AND owner = :owner AND key = :key AND created_at = :created_at
