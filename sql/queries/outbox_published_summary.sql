-- Published rows and when the last one was published, for `status`. A
-- one-off command: the count scans the table, so the metrics refresher does
-- not use it.
SELECT count(*) AS published,
       max(published_at) AS last_published_at
FROM {{table}}
WHERE status = 'published'
