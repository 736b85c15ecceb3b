-- How many restocks are failed and not yet resolved, by mall.
SELECT mall, count(*) AS failures
FROM restocks
WHERE status = 'failed'
GROUP BY mall
