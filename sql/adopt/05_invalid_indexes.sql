-- The relay's indexes on the table that an interrupted CONCURRENTLY build
-- left invalid: they must be dropped and built again.
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = '{{table_text}}'::regclass
  AND NOT i.indisvalid
  AND c.relname IN ('{{name}}_pending_id_idx', '{{name}}_pending_key_idx', '{{name}}_dead_id_idx')
