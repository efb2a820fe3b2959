-- While the head of a key waits for its retry, the later pending rows of that
-- key wait with it, so the claim does not keep scanning rows it must skip.
-- Rows locked elsewhere (the next batch in flight) are skipped, not waited for.
--   $1 the ids of the waiting heads, one per key
UPDATE {{table}} o
SET next_attempt_at = held.retry_at
FROM (
    SELECT later.{{sequence}} AS id, head.next_attempt_at AS retry_at
    FROM unnest($1::bigint[]) AS k(head_id)
    JOIN {{table}} head ON head.{{sequence}} = k.head_id
    JOIN {{table}} later
      ON later.{{key}} = head.{{key}}
     AND later.status = 'pending'
     AND later.{{sequence}} > k.head_id
     AND later.next_attempt_at < head.next_attempt_at
    FOR UPDATE OF later SKIP LOCKED
) AS held
WHERE o.{{sequence}} = held.id
