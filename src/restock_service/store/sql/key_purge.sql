-- Remove up to :limit keys past their retention window, oldest first, of every merchant
-- (the deployment's housekeeping; on Citus each shard purges its own). Rows that another
-- transaction holds are left for the next round, so that no one waits on the purge.
WITH forgotten AS (
  SELECT merchant_id, owner, key FROM idempotency_keys
  WHERE expires_at <= :now
  ORDER BY expires_at
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
), removed AS (
  DELETE FROM idempotency_keys AS k
  USING forgotten AS f
  WHERE k.merchant_id = f.merchant_id AND k.owner = f.owner AND k.key = f.key
  RETURNING 1
)
SELECT count(*) FROM removed
