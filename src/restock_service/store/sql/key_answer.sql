-- Store the answer under this request's claim, in the transaction of its effect. No row
-- when the claim no longer holds (the key was taken over): the transaction rolls back.
UPDATE idempotency_keys
SET status = :status, content_type = :content_type, body = :body, locked_until = NULL
WHERE owner = :owner AND key = :key AND token = :token AND status IS NULL
RETURNING 1
