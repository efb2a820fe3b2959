-- While the head of a key waits for its retry, the later pending rows of that
-- key wait with it, so the claim does not keep scanning rows it must skip.
-- Rows locked elsewhere (the next batch in flight) are skipped, not waited for.
--   $1 keys, $2 id of the waiting head per key
UPDATE {{table}} o
SET next_attempt_at = held.retry_at
FROM (
    SELECT later.id, head.next_attempt_at AS retry_at
    FROM unnest($1::text[], $2::bigint[]) AS k(message_key, head_id)
    JOIN {{table}} head ON head.id = k.head_id
    JOIN {{table}} later
      ON later.message_key = k.message_key
     AND later.status = 'pending'
     AND later.id > k.head_id
     AND later.next_attempt_at < head.next_attempt_at
    FOR UPDATE OF later SKIP LOCKED
) AS held
WHERE o.id = held.id
