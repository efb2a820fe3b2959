-- `migrate` of a schema-qualified table whose schema does not exist yet (a
-- new tenant): create the schema. Checked first, because CREATE SCHEMA IF
-- NOT EXISTS needs the CREATE privilege on the database even when the
-- schema is already there.
DO $$
BEGIN
    IF to_regnamespace('{{schema}}') IS NULL THEN
        CREATE SCHEMA {{schema}};
    END IF;
END
$$;
