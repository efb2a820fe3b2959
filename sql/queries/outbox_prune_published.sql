-- Delete up to $2 published rows published more than $1 seconds ago, oldest
-- first. Small batches keep locks short and let autovacuum keep up.
DELETE FROM {{table}}
WHERE {{sequence}} IN (
    SELECT {{sequence}}
    FROM {{table}}
    WHERE status = 'published'
      AND published_at < now() - make_interval(secs => $1::double precision)
    ORDER BY {{sequence}}
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
