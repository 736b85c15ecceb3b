-- One order's sync execution and its lines: one row per line, in line order.
SELECT e.order_no, e.mall, e.executed_at, e.recorded_at, l.sku, l.quantity
FROM sync_executions e
JOIN sync_execution_lines l ON l.merchant_id = :merchant AND l.order_no = e.order_no
WHERE e.merchant_id = :merchant AND e.order_no = :order_no
ORDER BY l.position
