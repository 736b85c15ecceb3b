SELECT sku, quantity FROM stock WHERE merchant_id = :merchant AND sku = ANY(:skus::text[])
