-- $1 now, $2 merchant_id, $3 name
WITH revoked AS (
  UPDATE api_keys SET revoked_at = $1
  WHERE merchant_id = $2 AND name = $3 AND revoked_at IS NULL AND true
  RETURNING name
)
SELECT name FROM revoked
