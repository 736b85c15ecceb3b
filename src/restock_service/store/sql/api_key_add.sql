-- Make the key :name of :merchant_id ('*': a platform key), kept as :digest. Its row; none
-- when the name is taken there, by a key in use or revoked.
WITH made AS (
  INSERT INTO api_keys (merchant_id, name, role, digest, created_at)
  SELECT :merchant_id, :name, :role, :digest, :now
  WHERE {key_gate}
  ON CONFLICT (merchant_id, name) DO NOTHING
  RETURNING merchant_id, name, role, created_at, last_used_at
)
-- rows
SELECT merchant_id, name, role, created_at, last_used_at FROM made
