SELECT sku, quantity FROM stock WHERE sku = ANY(:skus::text[])
