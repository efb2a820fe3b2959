-- How many published rows `prune` would delete: published more than $1
-- seconds ago. For `prune --dry-run`.
SELECT count(*)
FROM {{table}}
WHERE status = 'published'
  AND published_at < now() - make_interval(secs => $1::double precision)
