-- The default partition of a partitioned outbox table: the safety net that
-- takes a row whose created_at has no range partition, so an insert never
-- fails for want of one. Rows here are reported
-- (`outbox_default_partition_rows`): create the missing range partition.
CREATE TABLE IF NOT EXISTS {{default_partition}} PARTITION OF {{table}} DEFAULT
