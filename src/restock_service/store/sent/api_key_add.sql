-- $1 merchant_id, $2 name, $3 role, $4 digest, $5 now
WITH made AS (
  INSERT INTO api_keys (merchant_id, name, role, digest, created_at)
  SELECT $1, $2, $3, $4, $5
  WHERE true
  ON CONFLICT (merchant_id, name) DO NOTHING
  RETURNING merchant_id, name, role, created_at, last_used_at
)
SELECT merchant_id, name, role, created_at, last_used_at FROM made
