-- The partitions of the table named by $1: each one's bare name and oid,
-- its range (NULLs for the default partition) and whether it is the default.
SELECT child.relname::text AS name,
       child.oid,
       bounds.range[1]::timestamptz AS starts,
       bounds.range[2]::timestamptz AS ends,
       child.relpartbound IS NOT NULL
           AND pg_get_expr(child.relpartbound, child.oid) = 'DEFAULT' AS is_default
FROM pg_inherits link
JOIN pg_class child ON child.oid = link.inhrelid
LEFT JOIN LATERAL (
    SELECT regexp_match(
               pg_get_expr(child.relpartbound, child.oid),
               'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS range
) AS bounds ON true
WHERE link.inhparent = to_regclass($1::text)
ORDER BY starts NULLS FIRST, name
