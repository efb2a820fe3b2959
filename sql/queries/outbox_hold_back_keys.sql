-- While the head of a key waits for its retry, the later pending rows of that
-- key wait with it, so the claim does not keep scanning rows it must skip.
--   $1 keys, $2 id of the waiting head per key
UPDATE {{table}} o
SET next_attempt_at = head.next_attempt_at
FROM unnest($1::text[], $2::bigint[]) AS k(message_key, head_id)
JOIN {{table}} head ON head.id = k.head_id
WHERE o.message_key = k.message_key
  AND o.status = 'pending'
  AND o.id > k.head_id
  AND o.next_attempt_at < head.next_attempt_at
