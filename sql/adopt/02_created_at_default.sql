-- `migrate --adopt`, step 2: new rows record when they were written.
ALTER TABLE {{table}} ALTER COLUMN created_at SET DEFAULT clock_timestamp()
