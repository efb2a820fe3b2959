-- Backlog per topic: pending rows, age of the oldest pending row, dead rows.
SELECT coalesce({{topic}}, '') AS topic,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE status = 'pending'))::float8
           AS oldest_pending_age_seconds,
       count(*) FILTER (WHERE status = 'dead') AS dead
FROM {{table}}
WHERE status IN ('pending', 'dead')
GROUP BY 1
ORDER BY 1
