-- $1 merchant, $2 key_owner, $3 key, $4 sku, $5 now, $6 actor, $7 key_fingerprint, $8 key_expires_at, $9 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), gone AS (
  DELETE FROM stock WHERE merchant_id = $1 AND sku = $4 AND (SELECT ok FROM key_gate)
  RETURNING sku, quantity
), ledger AS (
  INSERT INTO stock_movements (merchant_id, sku, delta, quantity_after, reason, at, txid, actor)
  SELECT $1, sku, -quantity, 0, 'delete', $5, pg_current_xact_id()::text::bigint,
         $6
  FROM gone
), key_rows AS MATERIALIZED (
SELECT sku FROM gone
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $7, $5, $8,
         convert_to($9::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
