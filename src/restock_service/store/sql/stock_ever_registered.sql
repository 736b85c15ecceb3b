SELECT EXISTS (SELECT FROM stock_movements WHERE sku = :sku)
