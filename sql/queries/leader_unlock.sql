-- Give up the leadership of one table ($1, its quoted name) that this
-- relay no longer serves (the table was dropped), on the lock session.
SELECT pg_advisory_unlock(hashtextextended($1::text, 0)) AS released
