SELECT EXISTS (SELECT FROM stock_movements WHERE merchant_id = :merchant AND sku = :sku)
