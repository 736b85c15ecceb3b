-- Settle a failed restock by hand. Its row: whether it was settled now, and the record's
-- status as it was (null when no restock is recorded for the order).
WITH settled AS (  -- only a failed record is settled
  UPDATE restocks
  SET status = 'resolved', resolution_note = :note, resolved_by = :resolved_by,
      resolved_at = :now, resolved_actor = :actor
  WHERE order_no = :order_no AND status = 'failed'
  RETURNING order_no
)
SELECT EXISTS (SELECT FROM settled) AS settled,
       (SELECT status FROM restocks WHERE order_no = :order_no) AS status
