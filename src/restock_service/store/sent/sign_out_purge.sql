-- $1 now, $2 limit
WITH lapsed AS (
  SELECT sid FROM console_sign_outs
  WHERE expires_at <= $1
  ORDER BY expires_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED
), removed AS (
  DELETE FROM console_sign_outs AS s
  USING lapsed AS l
  WHERE s.sid = l.sid
  RETURNING 1
)
SELECT count(*) FROM removed
