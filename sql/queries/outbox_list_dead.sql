-- Up to $2 dead rows in id order, optionally of one topic ($1, NULL: any),
-- for `outbox-relay dead`. Uses the partial index on dead rows.
SELECT {{sequence}} AS id,
       coalesce({{topic}}, '') AS topic,
       {{key_display}} AS message_key,
       attempts,
       last_attempt_at,
       last_error
FROM {{table}}
WHERE status = 'dead'
  AND ($1::text IS NULL OR {{topic}} = $1::text)
ORDER BY {{sequence}}
LIMIT $2
