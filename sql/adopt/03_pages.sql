-- `migrate --adopt`: the table's size in pages, and whether any row still
-- lacks a value the backfill fills.
SELECT (pg_relation_size('{{table_text}}'::regclass) / current_setting('block_size')::bigint)::bigint AS pages,
       EXISTS (
           SELECT 1 FROM {{table}}
           WHERE {{sequence}} IS NULL OR created_at IS NULL OR {{event_id_column}} IS NULL
       ) AS unfilled
