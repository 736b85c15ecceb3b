-- A registered merchant (the merchants table is every node's on Citus: docs/scaling.md).
SELECT merchant_id, name, created_at FROM merchants WHERE merchant_id = :merchant_id
