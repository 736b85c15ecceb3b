-- Shared by the statements that move stock. It expects, before it, a CTE
-- moves(sku, delta, order_no, rank) of rows on locked skus, and the parameters :now,
-- :merchant, :reason and :actor; it defines the CTEs updated and ledger.
updated AS (  -- each sku moves once, by the sum of its moves
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = :now
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.merchant_id = :merchant AND s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (  -- one ledger row per move, in rank order, each with the quantity it left
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, actor)
  SELECT :merchant, m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         :reason, m.order_no, :now, pg_current_xact_id()::text::bigint, :actor
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
)
