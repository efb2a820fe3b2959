-- Move up to $3 dead rows back to pending, due at once with attempts reset.
-- $1 restricts to ids (NULL: any), $2 to a topic (NULL: any).
UPDATE {{table}}
SET status = 'pending',
    attempts = 0,
    next_attempt_at = '-infinity'
WHERE id IN (
    SELECT id
    FROM {{table}}
    WHERE status = 'dead'
      AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
      AND ($2::text IS NULL OR topic = $2::text)
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING id
