-- Remove up to :limit sign-outs whose cookies have lapsed, oldest first. Rows that another
-- transaction holds are left for the next round, so that no one waits on the purge.
WITH lapsed AS (
  SELECT sid FROM console_sign_outs
  WHERE expires_at <= :now
  ORDER BY expires_at
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
), removed AS (
  DELETE FROM console_sign_outs AS s
  USING lapsed AS l
  WHERE s.sid = l.sid
  RETURNING 1
)
SELECT count(*) FROM removed
