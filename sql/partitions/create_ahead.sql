-- Create the range partitions of {{table}} that do not exist yet, from the
-- current {{unit}} (UTC) to {{ahead}} {{unit}}s ahead, each named
-- {{name}}_p<start> (YYYYMMDD by day, YYYYMMDDHH by hour), in the table's
-- schema. Partitions are the table's children, so they take its columns,
-- checks and indexes. Values reach the DDL through format()'s %L, names
-- through %I.
DO $$
DECLARE
    step constant interval := interval '1 {{unit}}';
    first constant timestamptz := date_trunc('{{unit}}', now(), 'UTC');
    parent_schema text;
    starts timestamptz;
    partition_name text;
BEGIN
    SELECT n.nspname INTO parent_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = '{{table_text}}'::regclass;
    FOR k IN 0..{{ahead}} LOOP
        starts := first + k * step;
        partition_name := '{{name}}_p' || to_char(starts AT TIME ZONE 'UTC', '{{suffix_format}}');
        IF to_regclass(format('%I.%I', parent_schema, partition_name)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF {{table_text}} FOR VALUES FROM (%L) TO (%L)',
                parent_schema, partition_name, starts, starts + step);
        END IF;
    END LOOP;
END
$$
