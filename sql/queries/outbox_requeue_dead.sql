-- Move up to $3 dead rows back to pending, due at once with attempts reset.
-- $1 restricts to ids (NULL: any), $2 to a topic (NULL: any).
UPDATE {{table}}
SET status = 'pending',
    attempts = 0,
    next_attempt_at = '-infinity'
WHERE {{sequence}} IN (
    SELECT {{sequence}}
    FROM {{table}}
    WHERE status = 'dead'
      AND ($1::bigint[] IS NULL OR {{sequence}} = ANY($1::bigint[]))
      AND ($2::text IS NULL OR {{topic}} = $2::text)
    ORDER BY {{sequence}}
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {{sequence}} AS id
