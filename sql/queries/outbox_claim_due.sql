-- Lock up to $1 due pending rows in id order and return those that may be
-- published now.
--
-- A keyed row may be published only when every earlier pending row of its key
-- is in this same claim: an earlier row that is locked by another relay, or
-- waiting for its retry, holds the rest of its key back. Rows that are locked
-- here but held back stay locked until this transaction ends, which is
-- harmless: no other relay could publish them either.
WITH candidate AS MATERIALIZED (
    SELECT id, message_key
    FROM {{table}}
    WHERE status = 'pending'
      AND next_attempt_at <= now()
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
SELECT o.id,
       o.event_id::text AS event_id,
       o.topic,
       o.message_key,
       o.payload::text AS payload,
       o.headers,
       o.attempts,
       o.created_at
FROM candidate c
JOIN {{table}} o ON o.id = c.id
WHERE c.message_key IS NULL
   OR NOT EXISTS (
        SELECT 1
        FROM {{table}} earlier
        WHERE earlier.message_key = c.message_key
          AND earlier.status = 'pending'
          AND earlier.id < c.id
          AND earlier.id NOT IN (SELECT id FROM candidate)
   )
ORDER BY o.id
