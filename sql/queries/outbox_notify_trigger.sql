-- Whether the optional NOTIFY trigger (sql/optional/notify_trigger.sql) is
-- installed on the table ($1, quoted; $2 the trigger's name): with it, and
-- LISTEN on, an idle relay may poll less often.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_trigger
    WHERE tgrelid = $1::text::regclass
      AND tgname = $2::text
      AND NOT tgisinternal
) AS installed
