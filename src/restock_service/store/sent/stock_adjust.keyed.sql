-- $1 merchant, $2 key_owner, $3 key, $4 delta, $5 now, $6 sku, $7 limit, $8 order_no, $9 note, $10 actor, $11 key_fingerprint, $12 key_expires_at, $13 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), moved AS (
  UPDATE stock SET quantity = quantity + $4, updated_at = $5
  WHERE merchant_id = $1 AND sku = $6 AND abs(quantity + $4) <= $7
    AND (SELECT ok FROM key_gate)
  RETURNING sku, quantity, updated_at
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, note, actor)
  SELECT $1, sku, $4, quantity, 'adjustment', $8, $5,
         pg_current_xact_id()::text::bigint, $9, $10
  FROM moved
), key_rows AS MATERIALIZED (
SELECT sku, quantity, updated_at, true AS adjusted FROM moved
UNION ALL
SELECT sku, quantity, updated_at, false FROM stock
WHERE merchant_id = $1 AND sku = $6 AND NOT EXISTS (SELECT FROM moved)
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $11, $5, $12,
         convert_to($13::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
