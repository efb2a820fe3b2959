-- The tables a pattern names: $1 the schema as a LIKE pattern (NULL: the
-- schemas of the search path, as for an unqualified name), $2 the name as a
-- LIKE pattern (both with LIKE's own wildcards escaped). Plain and
-- partitioned tables, never a partition of one, never a view. Sorted, so
-- tables are served in a stable order.
SELECT n.nspname AS schema, c.relname AS name
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND c.relname LIKE $2::text
  AND CASE
        WHEN $1::text IS NULL THEN n.nspname = ANY (current_schemas(false))
        ELSE n.nspname LIKE $1::text
      END
ORDER BY n.nspname, c.relname
