-- $1 merchant, $2 key_owner, $3 key, $4 sku, $5 quantity, $6 now, $7 actor, $8 key_fingerprint, $9 key_expires_at, $10 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), old AS MATERIALIZED (
  SELECT quantity FROM stock
  WHERE merchant_id = $1 AND sku = $4 AND (SELECT ok FROM key_gate)
  FOR UPDATE
), put AS (
  INSERT INTO stock AS s (merchant_id, sku, quantity, created_at, updated_at)
  SELECT $1, $4, $5::bigint, $6::timestamptz, $6::timestamptz
  FROM (SELECT count(*) FROM old) AS read_first
  WHERE (SELECT ok FROM key_gate)
  ON CONFLICT (merchant_id, sku)
  DO UPDATE SET quantity = excluded.quantity, updated_at = excluded.updated_at
  RETURNING s.sku, s.quantity, s.updated_at, s.xmax = 0 AS inserted
), ledger AS (
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT $1, sku, quantity - coalesce((SELECT quantity FROM old), 0), quantity, 'set',
         updated_at, pg_current_xact_id()::text::bigint, $7
  FROM put
), key_rows AS MATERIALIZED (
SELECT sku, quantity, updated_at
FROM put
WHERE restock_retry_if(NOT inserted AND NOT EXISTS (SELECT FROM old))
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
