-- The table's columns and their types, as `format_type` names them
-- ('jsonb', 'bytea', 'character varying', ...): the layout is checked
-- against them at start-up.
--   $1 the quoted, possibly schema-qualified table name
SELECT a.attname::text AS name,
       format_type(a.atttypid, NULL) AS type_name
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1::text)
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
