-- The merchants with failed restocks not yet resolved after :after_id (or from the first,
-- when null): at most :limit of them, by merchant_id, each with its counts by mall. A
-- platform session's console home reads it: the one statement across merchants
-- (docs/scaling.md).
WITH failing AS (
  SELECT merchant_id, mall, count(*) AS failures
  FROM restocks
  WHERE status = 'failed' AND merchant_id > coalesce(:after_id::text, '')
  GROUP BY merchant_id, mall
), chosen AS (
  SELECT DISTINCT merchant_id FROM failing ORDER BY merchant_id LIMIT :limit
)
SELECT m.merchant_id, m.name, m.created_at, f.mall, f.failures
FROM chosen c
JOIN merchants m ON m.merchant_id = c.merchant_id
JOIN failing f ON f.merchant_id = c.merchant_id
ORDER BY m.merchant_id, f.mall
