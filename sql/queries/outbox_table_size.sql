-- Bytes on disk for the table, its indexes and TOAST; for a partitioned
-- table, of all its partitions (the parent itself has no storage). $1 is the
-- quoted name.
SELECT coalesce(
    (SELECT sum(pg_total_relation_size(tree.relid))::int8
     FROM pg_partition_tree($1::text::regclass) AS tree),
    pg_total_relation_size($1::text::regclass))
