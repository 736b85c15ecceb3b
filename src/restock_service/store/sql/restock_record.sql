-- One order's restock record and its lines: one row per line, in line order.
SELECT r.order_no, r.mall, r.status, r.code, r.requested_at, r.completed_at,
       r.repeat_requests, r.resolution_note, r.resolved_by, r.resolved_at, r.resolved_actor,
       l.sku, l.quantity, l.missing
FROM restocks r
LEFT JOIN restock_lines l
       ON l.merchant_id = :merchant AND l.order_no = r.order_no
WHERE r.merchant_id = :merchant AND r.order_no = :order_no
ORDER BY l.position
