-- Claim the caller's key for this request, unless a stored answer or a live claim holds
-- it (idempotency.state_of); when one does, return that row instead.
WITH claimed AS (  -- the key, taken when it is absent, forgotten, or its claim has lapsed
  INSERT INTO idempotency_keys AS k
    (owner, key, fingerprint, token, locked_until, created_at, expires_at)
  VALUES (:owner, :key, :fingerprint, :token, :locked_until, :now, :expires_at)
  ON CONFLICT (owner, key) DO UPDATE
    SET fingerprint = excluded.fingerprint, token = excluded.token,
        locked_until = excluded.locked_until, status = NULL, content_type = NULL,
        body = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
    WHERE k.expires_at <= :now OR (k.status IS NULL AND k.locked_until <= :now)
  RETURNING k.token
)
SELECT EXISTS (SELECT FROM claimed) AS claimed,
       held.fingerprint, held.token, held.locked_until, held.expires_at,
       held.status, held.content_type, held.body
-- the holder as this statement's snapshot saw it: none when it committed since, and the
-- claim is tried again
FROM (SELECT) AS one
LEFT JOIN idempotency_keys AS held ON held.owner = :owner AND held.key = :key
