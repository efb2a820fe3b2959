-- Leadership among the replicas of one table: a session-level advisory lock
-- keyed by the table's quoted name ($1), held for the life of the leader's
-- dedicated session. Standbys block here. The server releases the lock when
-- the leader's session ends (crash, SIGKILL, lost connection), and the
-- standby that was waiting gets it at once.
SELECT pg_advisory_lock(hashtextextended($1::text, 0))
