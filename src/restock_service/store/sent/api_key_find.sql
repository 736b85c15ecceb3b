-- $1 digest, $2 now, $3 noted_before
WITH found AS (
  SELECT merchant_id, name, role, last_used_at FROM api_keys
  WHERE digest = $1 AND revoked_at IS NULL
), noted AS (
  UPDATE api_keys k SET last_used_at = $2
  FROM found f
  WHERE k.merchant_id = f.merchant_id AND k.name = f.name
    AND (f.last_used_at IS NULL OR f.last_used_at < $3)
)
SELECT merchant_id, name, role FROM found
