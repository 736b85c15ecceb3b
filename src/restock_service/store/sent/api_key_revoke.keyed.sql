-- $1 merchant, $2 key_owner, $3 key, $4 now, $5 merchant_id, $6 name, $7 key_fingerprint, $8 key_expires_at, $9 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), revoked AS (
  UPDATE api_keys SET revoked_at = $4
  WHERE merchant_id = $5 AND name = $6 AND revoked_at IS NULL AND (SELECT ok FROM key_gate)
  RETURNING name
), key_rows AS MATERIALIZED (
SELECT name FROM revoked
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $7, $4, $8,
         convert_to($9::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
