-- Record one failed attempt per row: count it, keep the error, and either
-- schedule the retry or, when the error is final or attempts are used up,
-- make the row dead.
--   $1 ids, $2 errors, $3 final?, $4 retry delays in seconds, $5 max attempts
UPDATE {{table}} o
SET attempts = o.attempts + 1,
    last_error = f.error,
    last_attempt_at = now(),
    status = CASE
        WHEN f.is_final OR o.attempts + 1 >= $5::integer THEN 'dead'
        ELSE 'pending'
    END,
    next_attempt_at = now() + make_interval(secs => f.delay_secs)
FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::double precision[])
    AS f(id, error, is_final, delay_secs)
WHERE o.{{sequence}} = f.id
  AND o.status = 'pending'
RETURNING o.{{sequence}} AS id, o.status
