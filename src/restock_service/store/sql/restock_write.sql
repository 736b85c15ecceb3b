-- Write what rules.decide decided for a batch that restock_load_or_restore did not restore:
-- the new records (:new_*), their lines (:line_*), the restored lines' moves (:move_*), and
-- the repeats of the orders recorded before (:repeats). The decisions rest on the
-- registration of :read_skus, of which :registered_skus were registered when read; if that
-- changed, or another request recorded one of the new orders first, nothing is written and
-- the statement fails with a serialization failure, to be run again from the read.
-- Its rows: the repeats' (order_no, status), or one row of nulls.
WITH locked AS MATERIALIZED (  -- locked by key in the one order (docs/architecture.md):
  SELECT k.sku, NULL::text AS order_no  -- first the skus the decisions read, in sku order,
  FROM (SELECT DISTINCT sku FROM unnest(:read_skus::text[]) AS c(sku) WHERE {key_gate}
        ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s
                      WHERE s.merchant_id = :merchant AND s.sku = c.sku FOR UPDATE) k
  UNION ALL  -- then the repeats' records, in order_no order, as UNION ALL runs its parts
  SELECT NULL, k.order_no
  FROM (SELECT DISTINCT order_no FROM unnest(:repeats::text[]) AS c(order_no)
        WHERE {key_gate} ORDER BY order_no) c
  CROSS JOIN LATERAL (SELECT r.order_no FROM restocks r
                      WHERE r.merchant_id = :merchant AND r.order_no = c.order_no
                      FOR NO KEY UPDATE) k
), unchanged AS (  -- ok only if exactly :registered_skus are still registered; it reads
  -- all of `locked`, so every lock is taken before anything is written
  SELECT {key_gate} AND coalesce(array_agg(sku::text), '{}') @> :registered_skus::text[]
     AND :registered_skus::text[] @> coalesce(array_agg(sku::text), '{}') AS ok
  FROM locked
  WHERE sku IS NOT NULL
), claimed AS (  -- at most one record per order: the primary key decides
  INSERT INTO restocks (merchant_id, order_no, mall, status, code, requested_at,
                        completed_at, repeat_requests)
  SELECT :merchant, n.order_no, :mall, n.status, n.code, :now, :now, 0
  FROM unnest(:new_order_nos::text[], :new_statuses::text[], :new_codes::text[])
       AS n(order_no, status, code), unchanged u
  WHERE u.ok
  ORDER BY n.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (  -- the claimed records' lines
  INSERT INTO restock_lines (merchant_id, order_no, sku, position, quantity, missing)
  SELECT :merchant, l.order_no, l.sku, l.position, l.quantity, l.missing
  FROM unnest(:line_order_nos::text[], :line_skus::text[], :line_positions::int[],
              :line_quantities::int[], :line_missing::bool[])
       AS l(order_no, sku, position, quantity, missing)
  JOIN claimed USING (order_no)
), moves AS (  -- the restored lines of claimed records, in request order
  SELECT m.sku, m.delta, m.order_no, m.rank
  FROM unnest(:move_skus::text[], :move_deltas::bigint[], :move_order_nos::text[])
       WITH ORDINALITY AS m(sku, delta, order_no, rank)
  JOIN claimed USING (order_no)
),
-- include: move_stock.sql
, repeated AS (  -- each repeat counted once, its record locked in `locked`
  UPDATE restocks r SET repeat_requests = r.repeat_requests + 1
  FROM unchanged u
  WHERE u.ok AND r.merchant_id = :merchant AND r.order_no = ANY(:repeats::text[])
  RETURNING r.order_no, r.status
)
-- rows
SELECT r.order_no, r.status
FROM unchanged u
LEFT JOIN repeated r ON true
-- what was read moved: run it all again
WHERE restock_retry_if({key_gate} AND (NOT u.ok OR (SELECT count(*) FROM claimed) < cardinality(:new_order_nos::text[])))
