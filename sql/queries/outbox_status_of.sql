-- The status of each of the rows $1 that exist, so `requeue --id` can say
-- why it moved nothing.
SELECT {{sequence}} AS id, status
FROM {{table}}
WHERE {{sequence}} = ANY($1::bigint[])
ORDER BY {{sequence}}
