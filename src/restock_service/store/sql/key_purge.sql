-- Remove up to :limit keys past their retention window, oldest first. Rows that another
-- transaction holds are left for the next round, so that no one waits on the purge.
WITH forgotten AS (
  SELECT owner, key FROM idempotency_keys
  WHERE expires_at <= :now
  ORDER BY expires_at
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
), removed AS (
  DELETE FROM idempotency_keys AS k
  USING forgotten AS f
  WHERE k.owner = f.owner AND k.key = f.key
  RETURNING 1
)
SELECT count(*) FROM removed
