-- Revoke the key in use :name of :merchant_id ('*': a platform key); its row keeps the
-- name, so that an actor names one key for good. One row when it was revoked now.
WITH revoked AS (
  UPDATE api_keys SET revoked_at = :now
  WHERE merchant_id = :merchant_id AND name = :name AND revoked_at IS NULL AND {key_gate}
  RETURNING name
)
-- rows
SELECT name FROM revoked
