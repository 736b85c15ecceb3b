-- $1 read_skus, $2 merchant, $3 repeats, $4 registered_skus, $5 mall, $6 now, $7 new_order_nos, $8 new_statuses, $9 new_codes, $10 line_order_nos, $11 line_skus, $12 line_positions, $13 line_quantities, $14 line_missing, $15 move_skus, $16 move_deltas, $17 move_order_nos, $18 reason, $19 actor
WITH locked AS MATERIALIZED (
  SELECT k.sku, NULL::text AS order_no
  FROM (SELECT DISTINCT sku FROM unnest($1::text[]) AS c(sku) WHERE true
        ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = $2 AND s.sku = c.sku FOR UPDATE) k
  UNION ALL
  SELECT NULL, k.order_no
  FROM (SELECT DISTINCT order_no FROM unnest($3::text[]) AS c(order_no)
        WHERE true ORDER BY order_no) c
  CROSS JOIN LATERAL (SELECT r.order_no FROM restocks r
                      WHERE r.merchant_id = $2 AND r.order_no = c.order_no
                      FOR NO KEY UPDATE) k
), unchanged AS (
  SELECT true AND coalesce(array_agg(sku::text), '{}') @> $4::text[]
     AND $4::text[] @> coalesce(array_agg(sku::text), '{}') AS ok
  FROM locked
  WHERE sku IS NOT NULL
), claimed AS (
  INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,
                        completed_at, repeat_requests)
  SELECT $2, n.order_no, $5, n.status, n.code, $6, $6, 0
  FROM unnest($7::text[], $8::text[], $9::text[])
       AS n(order_no, status, code), unchanged u
  WHERE u.ok
  ORDER BY n.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT $2, l.order_no, l.sku, l.position, l.quantity, l.missing
  FROM unnest($10::text[], $11::text[], $12::int[],
              $13::int[], $14::bool[])
       AS l(order_no, sku, position, quantity, missing)
  JOIN claimed USING (order_no)
), moves AS (
  SELECT m.sku, m.delta, m.order_no, m.rank
  FROM unnest($15::text[], $16::bigint[], $17::text[])
       WITH ORDINALITY AS m(sku, delta, order_no, rank)
  JOIN claimed USING (order_no)
),
updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $6
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.merchant_id = $2 AND s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, actor)
  SELECT $2, m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         $18, m.order_no, $6, pg_current_xact_id()::text::bigint, $19
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
)
, repeated AS (
  UPDATE restocks r SET repeat_requests = r.repeat_requests + 1
  FROM unchanged u
  WHERE u.ok AND r.merchant_id = $2 AND r.order_no = ANY($3::text[])
  RETURNING r.order_no, r.status
)
SELECT r.order_no, r.status
FROM unchanged u
LEFT JOIN repeated r ON true
WHERE restock_retry_if(true AND (NOT u.ok OR (SELECT count(*) FROM claimed) < cardinality($7::text[])))
