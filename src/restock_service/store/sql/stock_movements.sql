-- A page of a sku's ledger after the row :after_id, oldest first; and whether the sku ever
-- existed (registering a sku always writes a ledger row, and ledger rows stay).
SELECT m.id, m.sku, m.delta, m.quantity_after, m.reason, m.order_no, m.at, m.note, m.actor
FROM stock_movements m
WHERE m.merchant_id = :merchant AND m.sku = :sku AND m.id > :after_id
ORDER BY m.id
LIMIT :limit
