-- $1 now, $2 limit
WITH forgotten AS (
  SELECT merchant_id, owner, key FROM idempotency_keys
  WHERE expires_at <= $1
  ORDER BY expires_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED
), removed AS (
  DELETE FROM idempotency_keys AS k
  USING forgotten AS f
  WHERE k.merchant_id = f.merchant_id AND k.owner = f.owner AND k.key = f.key
  RETURNING 1
)
SELECT count(*) FROM removed
