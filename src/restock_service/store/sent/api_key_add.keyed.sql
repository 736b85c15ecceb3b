-- $1 merchant, $2 key_owner, $3 key, $4 merchant_id, $5 name, $6 role, $7 digest, $8 now, $9 key_fingerprint, $10 key_expires_at, $11 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), made AS (
  INSERT INTO api_keys (merchant_id, name, role, digest, created_at)
  SELECT $4, $5, $6, $7, $8
  WHERE (SELECT ok FROM key_gate)
  ON CONFLICT (merchant_id, name) DO NOTHING
  RETURNING merchant_id, name, role, created_at, last_used_at
), key_rows AS MATERIALIZED (
SELECT merchant_id, name, role, created_at, last_used_at FROM made
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $9, $8, $10,
         convert_to($11::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
