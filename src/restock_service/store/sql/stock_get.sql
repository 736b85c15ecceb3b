SELECT sku, quantity, updated_at FROM stock WHERE merchant_id = :merchant AND sku = :sku
