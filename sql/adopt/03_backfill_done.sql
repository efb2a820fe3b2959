-- `migrate --adopt`: every old row is filled; the backfill's sequence is no
-- longer needed.
DROP SEQUENCE IF EXISTS {{backfill_seq}}
