-- The table named by $1 as schema.name (its schema spelled out even when
-- the name was given without one); no row when it does not exist or is not
-- visible.
SELECT format('%s.%s', n.nspname, c.relname) AS qualified
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1::text)
