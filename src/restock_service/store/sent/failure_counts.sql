-- $1 merchant
SELECT mall, count(*) AS failures
FROM restocks
WHERE merchant_id = $1 AND status = 'failed'
GROUP BY mall
