-- restock_records.sql, newest requested_at first: a keyset page before the position
-- (:after_at, :after_order_no), or from the newest when it is null.
WITH page AS (  -- the records of the page, in list order
  SELECT r.*
  FROM restocks r
  WHERE r.merchant_id = :merchant
    AND (:status::text IS NULL OR r.status = :status)
    AND (:mall::text IS NULL OR r.mall = :mall)
    -- one range of the (merchant_id, requested_at, order_no) index, read backwards
    AND (r.requested_at, r.order_no)
        < (coalesce(:after_at::timestamptz, 'infinity'), coalesce(:after_order_no::text, ''))
  ORDER BY r.requested_at DESC, r.order_no DESC
  LIMIT :limit
)
SELECT p.order_no, p.mall, p.status, p.code, p.requested_at, p.completed_at,
       p.repeat_requests, p.resolution_note, p.resolved_by, p.resolved_at, p.resolved_actor,
       l.sku, l.quantity, l.missing
FROM page p
LEFT JOIN restock_lines l ON l.merchant_id = :merchant AND l.order_no = p.order_no
ORDER BY p.requested_at DESC, p.order_no DESC, l.position
