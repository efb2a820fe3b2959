-- The status of each of the rows $1 that exist, so `requeue --id` can say
-- why it moved nothing.
SELECT id, status
FROM {{table}}
WHERE id = ANY($1::bigint[])
ORDER BY id
