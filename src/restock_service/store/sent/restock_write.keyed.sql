-- $1 merchant, $2 key_owner, $3 key, $4 read_skus, $5 repeats, $6 registered_skus, $7 mall, $8 now, $9 new_order_nos, $10 new_statuses, $11 new_codes, $12 line_order_nos, $13 line_skus, $14 line_positions, $15 line_quantities, $16 line_missing, $17 move_skus, $18 move_deltas, $19 move_order_nos, $20 reason, $21 actor, $22 key_fingerprint, $23 key_expires_at, $24 key_receipt_head
WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock(hashtextextended($1 || ' ' || $2 || ' ' || $3, 0))) AS ok
), locked AS MATERIALIZED (
  SELECT k.sku, NULL::text AS order_no
  FROM (SELECT DISTINCT sku FROM unnest($4::text[]) AS c(sku) WHERE (SELECT ok FROM key_gate)
        ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = $1 AND s.sku = c.sku FOR UPDATE) k
  UNION ALL
  SELECT NULL, k.order_no
  FROM (SELECT DISTINCT order_no FROM unnest($5::text[]) AS c(order_no)
        WHERE (SELECT ok FROM key_gate) ORDER BY order_no) c
  CROSS JOIN LATERAL (SELECT r.order_no FROM restocks r
                      WHERE r.merchant_id = $1 AND r.order_no = c.order_no
                      FOR NO KEY UPDATE) k
), unchanged AS (
  SELECT (SELECT ok FROM key_gate) AND coalesce(array_agg(sku::text), '{}') @> $6::text[]
     AND $6::text[] @> coalesce(array_agg(sku::text), '{}') AS ok
  FROM locked
  WHERE sku IS NOT NULL
), claimed AS (
  INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,
                        completed_at, repeat_requests)
  SELECT $1, n.order_no, $7, n.status, n.code, $8, $8, 0
  FROM unnest($9::text[], $10::text[], $11::text[])
       AS n(order_no, status, code), unchanged u
  WHERE u.ok
  ORDER BY n.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (
  INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT $1, l.order_no, l.sku, l.position, l.quantity, l.missing
  FROM unnest($12::text[], $13::text[], $14::int[],
              $15::int[], $16::bool[])
       AS l(order_no, sku, position, quantity, missing)
  JOIN claimed USING (order_no)
), moves AS (
  SELECT m.sku, m.delta, m.order_no, m.rank
  FROM unnest($17::text[], $18::bigint[], $19::text[])
       WITH ORDINALITY AS m(sku, delta, order_no, rank)
  JOIN claimed USING (order_no)
),
updated AS (
  UPDATE stock s SET quantity = s.quantity + t.delta, updated_at = $8
  FROM (SELECT sku, sum(delta) AS delta FROM moves GROUP BY sku) t
  WHERE s.merchant_id = $1 AND s.sku = t.sku
  RETURNING s.sku, s.quantity
), ledger AS (
  INSERT INTO stock_movements
    (merchant_id, sku, delta, quantity_after, reason, order_no, at, txid, actor)
  SELECT $1, m.sku, m.delta,
         u.quantity - coalesce(sum(m.delta) OVER (
           PARTITION BY m.sku ORDER BY m.rank DESC
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
         $20, m.order_no, $8, pg_current_xact_id()::text::bigint, $21
  FROM moves m JOIN updated u USING (sku)
  ORDER BY m.rank
)
, repeated AS (
  UPDATE restocks r SET repeat_requests = r.repeat_requests + 1
  FROM unchanged u
  WHERE u.ok AND r.merchant_id = $1 AND r.order_no = ANY($5::text[])
  RETURNING r.order_no, r.status
), key_rows AS MATERIALIZED (
SELECT r.order_no, r.status
FROM unchanged u
LEFT JOIN repeated r ON true
WHERE restock_retry_if((SELECT ok FROM key_gate) AND (NOT u.ok OR (SELECT count(*) FROM claimed) < cardinality($9::text[])))
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT $1, $2, $3, $22, $8, $23,
         convert_to($24::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND (true)
)
SELECT * FROM key_rows
