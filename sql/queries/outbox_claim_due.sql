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
--
-- $5 holds the ids of rows PostgreSQL refused to record at all (not even as
-- dead): they are never candidates, but as pending rows passed over they
-- still hold the rest of their key back.
--
-- Fence: with leader election, $3 and $4 are the pid of this relay's lock
-- session and the lock's key, and the claim takes nothing unless that session
-- still holds the lock. A leader whose lock session died (and whose lock
-- another replica may hold by now) claims nothing from that moment, even
-- before it notices. Without election both are NULL.
WITH candidate AS MATERIALIZED (
    SELECT {{sequence}} AS id,
           {{event_id}} AS event_id,
           {{topic}} AS topic,
           {{key}} AS key_stored,
           {{key_bytes}} AS message_key,
           {{payload}} AS payload,
           {{headers}} AS headers,
           {{event_type}} AS event_type,
           attempts,
           created_at
    FROM {{table}}
    WHERE status = 'pending'
      AND next_attempt_at <= now()
      -- Locked by our own batch in flight: skipped anyway, but filtering
      -- them here spares the scan an attempt to lock each one.
      AND {{sequence}} NOT IN (SELECT unnest($2::bigint[]))
      AND {{sequence}} NOT IN (SELECT unnest($5::bigint[]))
      AND ($3::int4 IS NULL OR EXISTS (
            SELECT 1
            FROM pg_locks lock
            WHERE lock.locktype = 'advisory'
              AND lock.granted
              AND lock.pid = $3
              AND lock.objsubid = 1
              AND ((lock.classid::int8 << 32) | lock.objid::int8) = $4::int8
          ))
    ORDER BY {{sequence}}
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
ours AS MATERIALIZED (
    SELECT id FROM candidate
    UNION ALL
    SELECT unnest($2::bigint[])
),
-- Every pending row that sorts before the last candidate and is not ours was
-- passed over by the candidate scan (locked elsewhere, or not due): per key,
-- the first of them. One range scan of the pending index the candidate scan
-- just walked, instead of one index probe per candidate row. Keyless rows
-- are not filtered out here (a NULL key matches no candidate): a filter on
-- the key would let the planner pick a full scan of the per-key index, which
-- also covers these columns but not this range.
blocker AS MATERIALIZED (
    SELECT earlier.{{key}} AS key_stored, min(earlier.{{sequence}}) AS first_id
    FROM {{table}} earlier
    WHERE earlier.status = 'pending'
      AND earlier.{{sequence}} < (SELECT max(id) FROM candidate)
      AND earlier.{{sequence}} NOT IN (SELECT id FROM ours)
    GROUP BY earlier.{{key}}
)
SELECT c.id, c.event_id, c.topic, c.message_key, c.payload, c.headers,
       c.event_type, c.attempts, c.created_at
FROM candidate c
WHERE NOT EXISTS (
    SELECT 1
    FROM blocker b
    WHERE b.key_stored = c.key_stored
      AND b.first_id < c.id
)
-- No ORDER BY: the caller sorts by id (cheaper there than a sort of wide
-- rows here).
