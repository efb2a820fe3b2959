-- `migrate --adopt`, step 3: fill the rows that existed before step 2, one
-- range of pages at a time (a TID range scan: each batch reads only its
-- pages, so the whole backfill reads the table once). Old rows take values
-- from a sequence that starts at the bottom of bigint, so they come before
-- every new row, in the order they lie in the table.
--   $1 first page, $2 page after the last
-- One row back per row filled: run unnamed (behind a pooler too), it has no
-- command tag to count from.
UPDATE {{table}}
SET {{sequence}} = coalesce({{sequence}}, nextval('{{backfill_seq_text}}')),
    created_at = coalesce(created_at, statement_timestamp()),
    {{event_id_column}} = coalesce({{event_id_column}}, {{new_event_id}})
WHERE ctid >= ('(' || $1::bigint || ',0)')::tid
  AND ctid < ('(' || $2::bigint || ',0)')::tid
  AND ({{sequence}} IS NULL OR created_at IS NULL OR {{event_id_column}} IS NULL)
RETURNING 1
