-- A topic name Kafka accepts (1 to 249 of ASCII letters, digits, '.', '_',
-- '-'; not "." or ".."), checked in the application's own transaction, as the
-- headers are. NOT VALID: rows already in the table are not scanned (a busy
-- table is not locked for that), and any invalid one among them still goes
-- `dead` alone with its reason when the relay reaches it.
-- PostgreSQL checks a CHECK on every UPDATE of the row, so on every mark: a
-- length test and a negated character class, not an anchored `{1,249}`
-- pattern, which made each mark six times slower.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = '{{table}}'::regclass AND conname = '{{name}}_topic_valid'
    ) THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_topic_valid"
            CHECK (length(topic) BETWEEN 1 AND 249
                   AND topic !~ '[^A-Za-z0-9._-]'
                   AND topic NOT IN ('.', '..')) NOT VALID;
    END IF;
END
$$;
