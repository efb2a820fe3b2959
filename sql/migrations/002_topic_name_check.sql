-- A topic name Kafka accepts (1 to 249 of ASCII letters, digits, '.', '_',
-- '-'; not "." or ".."), checked in the application's own transaction, as the
-- headers are.
--
-- Only pending rows are held to it. PostgreSQL checks a CHECK on every UPDATE
-- of a row, whatever the UPDATE changes, so a rule that held for every status
-- would refuse the relay's own UPDATE that makes an invalid row `dead`: one
-- such row, older than the constraint (NOT VALID does not check rows already
-- there), would fail every batch that claims it and stall the table. With the
-- rule on pending rows only, that row goes `dead` alone with its reason, and
-- `requeue` refuses to make it pending again until its topic is fixed.
--
-- NOT VALID: rows already in the table are not scanned (a busy table is not
-- locked for that). A constraint of an earlier version, which held for every
-- status, or another sink's rule (`migrate --sink rabbitmq|redis|nats`), is
-- replaced in this same transaction.
--
-- A length test and a negated character class, not an anchored `{1,249}`
-- pattern, which made each mark six times slower.
DO $$
DECLARE
    existing text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO existing
    FROM pg_constraint
    WHERE conrelid = '{{table}}'::regclass AND conname = '{{name}}_topic_valid';
    IF existing IS NOT NULL
       AND (existing NOT LIKE '%status%' OR existing LIKE '%octet_length%') THEN
        ALTER TABLE {{table}} DROP CONSTRAINT "{{name}}_topic_valid";
        existing := NULL;
    END IF;
    IF existing IS NULL THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_topic_valid"
            CHECK (status <> 'pending'
                   OR (length(topic) BETWEEN 1 AND 249
                       AND topic !~ '[^A-Za-z0-9._-]'
                       AND topic NOT IN ('.', '..'))) NOT VALID;
    END IF;
END
$$;
