-- Optional low-latency wake-up: NOTIFY the relay when rows are inserted.
-- The notification is sent by the inserting transaction, so it is delivered
-- on commit and never for a rollback. It is a hint only: the relay keeps
-- polling as a backstop. One notification per statement keeps the cost of
-- NOTIFY's commit-time lock low for multi-row inserts.
CREATE OR REPLACE FUNCTION {{notify_function}}() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('{{notify_channel}}', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS "{{name}}_notify" ON {{table}};
CREATE TRIGGER "{{name}}_notify"
    AFTER INSERT ON {{table}}
    FOR EACH STATEMENT
    EXECUTE FUNCTION {{notify_function}}();
