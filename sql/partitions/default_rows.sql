-- Rows in the default partition (counted up to 10,000): each one is a row
-- whose created_at had no range partition.
SELECT count(*) AS rows
FROM (SELECT 1 FROM {{default_partition}} LIMIT 10000) AS sample
