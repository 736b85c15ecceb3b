-- Write what rules.decide decided for a batch that restock_load_or_restore did not restore:
-- the new records (:new_*), their lines (:line_*), the restored lines' moves (:move_*), and
-- the repeats of the orders recorded before (:repeats). The decisions rest on the
-- registration of :read_skus, of which :registered_skus were registered when read; if that
-- changed, or another request recorded one of the new orders first, nothing is written and
-- the statement fails with a serialization failure, to be run again from the read.
-- Its rows: the repeats' (order_no, status), or one row of nulls.
WITH locked AS MATERIALIZED (  -- the skus the decisions read, locked in sku order, by key
  SELECT k.sku
  FROM (SELECT DISTINCT sku FROM unnest(:read_skus::text[]) AS c(sku) WHERE {key_gate}
        ORDER BY sku) c
  CROSS JOIN LATERAL (SELECT s.sku FROM stock s WHERE s.sku = c.sku FOR UPDATE) k
), unchanged AS (  -- ok only if exactly :registered_skus are still registered
  SELECT {key_gate} AND coalesce(array_agg(sku::text), '{}') @> :registered_skus::text[]
     AND :registered_skus::text[] @> coalesce(array_agg(sku::text), '{}') AS ok
  FROM locked
), claimed AS (  -- at most one record per order: the primary key decides
  INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at,
                        repeat_requests)
  SELECT n.order_no, :mall, n.status, n.code, :now, :now, 0
  FROM unnest(:new_order_nos::text[], :new_statuses::text[], :new_codes::text[])
       AS n(order_no, status, code), unchanged u
  WHERE u.ok
  ORDER BY n.order_no
  ON CONFLICT DO NOTHING
  RETURNING order_no
), lines AS (  -- the claimed records' lines
  INSERT INTO restock_lines (order_no, sku, position, quantity, missing)
  SELECT l.order_no, l.sku, l.position, l.quantity, l.missing
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
, repeated AS (  -- each repeat counted once
  UPDATE restocks r SET repeat_requests = r.repeat_requests + 1
  FROM unchanged u
  WHERE u.ok AND r.order_no = ANY(:repeats::text[])
  RETURNING r.order_no, r.status
)
-- rows
SELECT r.order_no, r.status
FROM unchanged u
LEFT JOIN repeated r ON true
-- what was read moved: run it all again
WHERE restock_retry_if({key_gate} AND (NOT u.ok OR (SELECT count(*) FROM claimed) < cardinality(:new_order_nos::text[])))
