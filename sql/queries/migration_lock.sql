-- Serialise concurrent `migrate` runs (two replicas starting at once): the
-- second waits here, then finds every object already in place.
SELECT pg_advisory_xact_lock($1::bigint)
