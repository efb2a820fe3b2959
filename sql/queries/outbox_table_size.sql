-- Bytes on disk for the table, its indexes and TOAST. $1 is the quoted name.
SELECT pg_total_relation_size($1::text::regclass)
