-- Register :merchant_id as :name; a registered one is renamed when :rename, and otherwise
-- left as it is. Its row, and whether this statement registered it.
WITH put AS (
  INSERT INTO merchants AS m (merchant_id, name, created_at)
  SELECT :merchant_id, :name, :now
  WHERE {key_gate}
  ON CONFLICT (merchant_id)
  DO UPDATE SET name = CASE WHEN :rename::bool THEN excluded.name ELSE m.name END
  RETURNING m.merchant_id, m.name, m.created_at, m.xmax = 0 AS created
)
-- rows
SELECT merchant_id, name, created_at, created FROM put
