-- $1 merchant, $2 status, $3 mall, $4 after_at, $5 after_order_no, $6 limit
WITH page AS (
  SELECT r.*
  FROM restocks r
  WHERE r.merchant_id = $1
    AND ($2::text IS NULL OR r.status = $2)
    AND ($3::text IS NULL OR r.mall = $3)
    AND (r.requested_at, r.order_no)
        < (coalesce($4::timestamptz, 'infinity'), coalesce($5::text, ''))
  ORDER BY r.requested_at DESC, r.order_no DESC
  LIMIT $6
)
SELECT p.order_no, p.mall, p.status, p.code, p.requested_at, p.completed_at,
       p.repeat_requests, p.resolution_note, p.resolved_by, p.resolved_at, p.resolved_actor,
       l.sku, l.quantity, l.missing
FROM page p
LEFT JOIN restock_lines l ON l.merchant_id = $1 AND l.order_no = p.order_no
ORDER BY p.requested_at DESC, p.order_no DESC, l.position
