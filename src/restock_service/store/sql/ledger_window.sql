-- The merchant's ledger rows after the feed position (:after_txid, :after_id), in (txid, id)
-- order, only of transactions older than the snapshot's xmin: every transaction below it
-- has ended, so no row can appear later behind a cursor (ids are handed out before commit).
SELECT m.txid, m.id, m.sku, m.at
FROM stock_movements m
WHERE m.merchant_id = :merchant
  AND (m.txid, m.id) > (:after_txid::bigint, :after_id::bigint)
  AND m.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY m.txid, m.id
LIMIT :limit
