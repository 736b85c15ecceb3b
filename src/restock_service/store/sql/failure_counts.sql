-- How many of the merchant's restocks are failed and not yet resolved, by mall.
SELECT mall, count(*) AS failures
FROM restocks
WHERE merchant_id = :merchant AND status = 'failed'
GROUP BY mall
