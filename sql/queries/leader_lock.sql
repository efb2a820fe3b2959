-- Leadership among the replicas of each table: for every table named in $1
-- (quoted names), try for a session-level advisory lock keyed by the name,
-- held for the life of the leader's dedicated session (one per database,
-- whatever the number of tables); the server releases them all when that
-- session ends (crash, SIGKILL, lost connection). Standbys try again every
-- few hundred milliseconds rather than block in pg_advisory_lock: a blocked
-- statement keeps its snapshot for the whole wait, which holds back the
-- cleanup of dead rows for the entire database and slows the leader's claim.
-- Also returns this session's pid and each lock's key: the leader's claims
-- carry them as a fence (see outbox_claim_due.sql).
SELECT lock.name, pg_try_advisory_lock(lock.key) AS won, pg_backend_pid() AS pid, lock.key
FROM (SELECT name, hashtextextended(name, 0) AS key FROM unnest($1::text[]) AS name) AS lock
