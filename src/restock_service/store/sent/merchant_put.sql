-- $1 merchant_id, $2 name, $3 now, $4 rename
WITH put AS (
  INSERT INTO merchants AS m (merchant_id, name, created_at)
  SELECT $1, $2, $3
  WHERE true
  ON CONFLICT (merchant_id)
  DO UPDATE SET name = CASE WHEN $4::bool THEN excluded.name ELSE m.name END
  RETURNING m.merchant_id, m.name, m.created_at, m.xmax = 0 AS created
)
SELECT merchant_id, name, created_at, created FROM put
