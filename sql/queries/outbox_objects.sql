-- Which of the relay's objects exist, so `migrate` can say what it created
-- and what was already in place. $1 relations (table, indexes; quoted,
-- schema-qualified), $2 function signatures, $3 the table, $4 trigger
-- names, $5 constraint names.
SELECT n AS name
FROM unnest($1::text[]) AS n
WHERE to_regclass(n) IS NOT NULL
UNION ALL
SELECT n
FROM unnest($2::text[]) AS n
WHERE to_regprocedure(n) IS NOT NULL
UNION ALL
SELECT t.tgname::text
FROM pg_trigger t
WHERE t.tgrelid = to_regclass($3::text) AND t.tgname = ANY($4::text[])
UNION ALL
SELECT c.conname::text
FROM pg_constraint c
WHERE c.conrelid = to_regclass($3::text) AND c.conname = ANY($5::text[])
