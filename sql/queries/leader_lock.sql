-- Leadership among the replicas of one table: try for a session-level
-- advisory lock keyed by the table's quoted name ($1), held for the life of
-- the leader's dedicated session; the server releases it when that session
-- ends (crash, SIGKILL, lost connection). Standbys try again every few
-- hundred milliseconds rather than block in pg_advisory_lock: a blocked
-- statement keeps its snapshot for the whole wait, which holds back the
-- cleanup of dead rows for the entire database and slows the leader's claim.
-- Also returns this session's pid and the lock's key: the leader's claims
-- carry them as a fence (see outbox_claim_due.sql).
SELECT pg_try_advisory_lock(lock.key) AS won, pg_backend_pid() AS pid, lock.key
FROM (SELECT hashtextextended($1::text, 0) AS key) AS lock
