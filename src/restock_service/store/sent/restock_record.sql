-- $1 merchant, $2 order_no
SELECT r.order_no, r.mall, r.status, r.code, r.requested_at, r.completed_at,
       r.repeat_requests, r.resolution_note, r.resolved_by, r.resolved_at, r.resolved_actor,
       l.sku, l.quantity, l.missing
FROM restocks r
LEFT JOIN restock_lines l
       ON l.merchant_id = $1 AND l.order_no = r.order_no
WHERE r.merchant_id = $1 AND r.order_no = $2
ORDER BY l.position
