-- The key in use whose digest is :digest, if any, by who holds it. Its use is noted at
-- :now when the use noted last is older than :noted_before (keys.USE_NOTED_EVERY).
WITH found AS (
  SELECT merchant_id, name, role, last_used_at FROM api_keys
  WHERE digest = :digest AND revoked_at IS NULL
), noted AS (
  UPDATE api_keys k SET last_used_at = :now
  FROM found f
  WHERE k.merchant_id = f.merchant_id AND k.name = f.name
    AND (f.last_used_at IS NULL OR f.last_used_at < :noted_before)
)
SELECT merchant_id, name, role FROM found
