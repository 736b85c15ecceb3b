-- $1 merchant, $2 after_txid, $3 after_id, $4 limit
SELECT m.txid, m.id, m.sku, m.at
FROM stock_movements m
WHERE m.merchant_id = $1
  AND (m.txid, m.id) > ($2::bigint, $3::bigint)
  AND m.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY m.txid, m.id
LIMIT $4
