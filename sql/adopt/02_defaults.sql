-- `migrate --adopt`: the columns that already have a default (or are
-- identities), which step 2 leaves alone.
--   $1 the quoted, possibly schema-qualified table name
SELECT a.attname::text AS name
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1::text)
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND (a.atthasdef OR a.attidentity <> '')
