-- `migrate --adopt`, step 3: the sequence old rows draw from, and how many
-- pages to walk.
CREATE SEQUENCE IF NOT EXISTS {{backfill_seq}} AS bigint
    MINVALUE -9223372036854775807 START WITH -9223372036854775807
