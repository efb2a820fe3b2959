-- How many dead rows `requeue` would move with the same selection:
-- $1 ids (NULL: any), $2 topic (NULL: any). For `requeue --dry-run`.
SELECT count(*)
FROM {{table}}
WHERE status = 'dead'
  AND ($1::bigint[] IS NULL OR {{sequence}} = ANY($1::bigint[]))
  AND ($2::text IS NULL OR {{topic}} = $2::text)
