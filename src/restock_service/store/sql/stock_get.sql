SELECT sku, quantity, updated_at FROM stock WHERE sku = :sku
