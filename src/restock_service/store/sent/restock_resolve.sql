-- $1 note, $2 resolved_by, $3 now, $4 actor, $5 merchant, $6 order_no
WITH settled AS (
  UPDATE restocks
  SET status = 'resolved', resolution_note = $1, resolved_by = $2,
      resolved_at = $3, resolved_actor = $4
  WHERE merchant_id = $5 AND order_no = $6 AND status = 'failed'
    AND true
  RETURNING order_no, mall, status, code, requested_at, completed_at, repeat_requests,
            resolution_note, resolved_by, resolved_at, resolved_actor
)
SELECT true AS settled, NULL::text AS was, s.*, l.sku, l.quantity, l.missing, l.position
FROM settled s
LEFT JOIN restock_lines l ON l.merchant_id = $5 AND l.order_no = s.order_no
UNION ALL
SELECT false,
       (SELECT status FROM restocks WHERE merchant_id = $5 AND order_no = $6),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE NOT EXISTS (SELECT FROM settled)
ORDER BY 3, 17
