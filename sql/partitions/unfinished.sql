-- Rows that are not published (pending or dead) created before $1, per
-- partition: such a partition is kept past the retention. Both states have
-- their own partial index, so this reads no published row.
SELECT tableoid AS partition, count(*) AS rows
FROM {{table}}
WHERE created_at < $1::timestamptz
  AND (status = 'pending' OR status = 'dead')
GROUP BY tableoid
