-- Leadership among the replicas of one table: try for a session-level
-- advisory lock keyed by the table's quoted name ($1), held for the life of
-- the leader's dedicated session; the server releases it when that session
-- ends (crash, SIGKILL, lost connection). Standbys try again every few
-- hundred milliseconds rather than block in pg_advisory_lock: a blocked
-- statement keeps its snapshot for the whole wait, which holds back the
-- cleanup of dead rows for the entire database and slows the leader's claim.
SELECT pg_try_advisory_lock(hashtextextended($1::text, 0))
