-- Lock up to $1 due pending rows in id order and return those that may be
-- published now. $2 holds the ids this relay already has in flight (sent to
-- the producer, not yet recorded): the producer keeps them ahead of anything
-- sent later, so they count as "ours".
--
-- A keyed row may be published only when every earlier pending row of its key
-- is in this claim or in flight here: an earlier row that is locked by another
-- relay, or waiting for its retry, holds the rest of its key back. Rows that
-- are locked here but held back stay locked until this transaction ends,
-- which is harmless: no other relay could publish them either.
WITH candidate AS MATERIALIZED (
    SELECT id,
           event_id::text AS event_id,
           topic,
           message_key,
           payload::text AS payload,
           headers,
           attempts,
           created_at
    FROM {{table}}
    WHERE status = 'pending'
      AND next_attempt_at <= now()
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
ours AS MATERIALIZED (
    SELECT id FROM candidate
    UNION ALL
    SELECT unnest($2::bigint[])
)
SELECT c.*
FROM candidate c
WHERE c.message_key IS NULL
   OR NOT EXISTS (
        SELECT 1
        FROM {{table}} earlier
        WHERE earlier.message_key = c.message_key
          AND earlier.status = 'pending'
          AND earlier.id < c.id
          AND earlier.id NOT IN (SELECT id FROM ours)
   )
ORDER BY c.id
