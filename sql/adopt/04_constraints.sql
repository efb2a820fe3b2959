-- `migrate --adopt`, step 4: the relay's checks, added NOT VALID (a moment's
-- lock, no scan) and validated separately (which scans without blocking
-- writers).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = '{{table_text}}'::regclass AND conname = '{{name}}_status_valid') THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_status_valid"
            CHECK (status IN ('pending', 'published', 'dead')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = '{{table_text}}'::regclass AND conname = '{{name}}_sequence_not_null') THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_sequence_not_null"
            CHECK ({{sequence}} IS NOT NULL) NOT VALID;
    END IF;
END
$$
