-- $1 merchant, $2 key_owner, $3 key, $4 merchant_id, $5 name, $6 now, $7 rename, $8 key_fingerprint, $9 key_expires_at, $10 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), put AS (
  INSERT INTO merchants AS m (merchant_id, name, created_at)
  SELECT $4, $5, $6
  WHERE (SELECT ok FROM key_gate)
  ON CONFLICT (merchant_id)
  DO UPDATE SET name = CASE WHEN $7::bool THEN excluded.name ELSE m.name END
  RETURNING m.merchant_id, m.name, m.created_at, m.xmax = 0 AS created
), key_rows AS MATERIALIZED (
SELECT merchant_id, name, created_at, created FROM put
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $8, $6, $9,
         convert_to($10::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
