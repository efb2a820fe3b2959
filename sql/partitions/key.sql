-- How the table named by $1 is partitioned ('RANGE (created_at)' for a
-- table made by `migrate --partition-by`); NULL when it is not.
SELECT pg_get_partkeydef(to_regclass($1::text)) AS key
