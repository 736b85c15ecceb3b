-- $1 after_id, $2 limit
WITH failing AS (
  SELECT merchant_id, mall, count(*) AS failures
  FROM restocks
  WHERE status = 'failed' AND merchant_id > coalesce($1::text, '')
  GROUP BY merchant_id, mall
), chosen AS (
  SELECT DISTINCT merchant_id FROM failing ORDER BY merchant_id LIMIT $2
)
SELECT m.merchant_id, m.name, m.created_at, f.mall, f.failures
FROM chosen c
JOIN merchants m ON m.merchant_id = c.merchant_id
JOIN failing f ON f.merchant_id = c.merchant_id
ORDER BY m.merchant_id, f.mall
