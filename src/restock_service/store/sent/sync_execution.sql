-- $1 merchant, $2 order_no
SELECT e.order_no, e.mall, e.executed_at, e.recorded_at, l.sku, l.quantity
FROM sync_executions e
JOIN sync_execution_lines l ON l.merchant_id = $1 AND l.order_no = e.order_no
WHERE e.merchant_id = $1 AND e.order_no = $2
ORDER BY l.position
