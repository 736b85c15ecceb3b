-- $1 merchant, $2 key_owner, $3 key, $4 note, $5 resolved_by, $6 now, $7 actor, $8 order_no, $9 key_fingerprint, $10 key_expires_at, $11 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), settled AS (
  UPDATE restocks
  SET status = 'resolved', resolution_note = $4, resolved_by = $5,
      resolved_at = $6, resolved_actor = $7
  WHERE merchant_id = $1 AND order_no = $8 AND status = 'failed'
    AND (SELECT ok FROM key_gate)
  RETURNING order_no, mall, status, code, requested_at, completed_at, repeat_requests,
            resolution_note, resolved_by, resolved_at, resolved_actor
), key_rows AS MATERIALIZED (
SELECT true AS settled, NULL::text AS was, s.*, l.sku, l.quantity, l.missing, l.position
FROM settled s
LEFT JOIN restock_lines l ON l.merchant_id = $1 AND l.order_no = s.order_no
UNION ALL
SELECT false,
       (SELECT status FROM restocks WHERE merchant_id = $1 AND order_no = $8),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE NOT EXISTS (SELECT FROM settled)
ORDER BY 3, 17
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $9, $6, $10,
         convert_to($11::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
