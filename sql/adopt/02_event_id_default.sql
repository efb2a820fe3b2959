-- `migrate --adopt`, step 2: new rows get an event id when the application
-- gives none.
ALTER TABLE {{table}} ALTER COLUMN {{event_id_column}} SET DEFAULT gen_random_uuid()
