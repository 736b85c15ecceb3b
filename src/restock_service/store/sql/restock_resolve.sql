-- Settle a failed restock by hand. When it was settled now: the record as settled, one row
-- per line in line order (as restock_record.sql reads it), with `settled` true. Otherwise one
-- row with `settled` false and `was`, the record's status (null when no restock is recorded
-- for the order).
WITH settled AS (  -- only a failed record is settled
  UPDATE restocks
  SET status = 'resolved', resolution_note = :note, resolved_by = :resolved_by,
      resolved_at = :now, resolved_actor = :actor
  WHERE merchant_id = :merchant AND order_no = :order_no AND status = 'failed'
    AND {key_gate}
  RETURNING order_no, mall, status, code, requested_at, completed_at, repeat_requests,
            resolution_note, resolved_by, resolved_at, resolved_actor
)
-- rows
SELECT true AS settled, NULL::text AS was, s.*, l.sku, l.quantity, l.missing, l.position
FROM settled s
LEFT JOIN restock_lines l ON l.merchant_id = :merchant AND l.order_no = s.order_no
UNION ALL
SELECT false,
       (SELECT status FROM restocks WHERE merchant_id = :merchant AND order_no = :order_no),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE NOT EXISTS (SELECT FROM settled)
ORDER BY 3, 17
