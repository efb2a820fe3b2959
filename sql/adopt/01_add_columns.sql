-- `migrate --adopt`, step 1: the relay's columns on an existing table.
-- Every default here is a constant, so PostgreSQL stores it in the catalog
-- and neither rewrites nor scans the table: the ACCESS EXCLUSIVE lock is
-- held for a moment. Columns that need per-row values (the sequence, the
-- event id, created_at) start NULL; step 2 gives new rows their defaults and
-- the backfill fills old ones. IF NOT EXISTS makes the step idempotent and
-- leaves mapped columns that exist as they are.
ALTER TABLE {{table}}
    ADD COLUMN IF NOT EXISTS status          text        NOT NULL DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN IF NOT EXISTS last_attempt_at timestamptz NULL,
    ADD COLUMN IF NOT EXISTS last_error      text        NULL,
    ADD COLUMN IF NOT EXISTS published_at    timestamptz NULL,
    ADD COLUMN IF NOT EXISTS created_at      timestamptz NULL,
    ADD COLUMN IF NOT EXISTS {{sequence}}    bigint      NULL,
    ADD COLUMN IF NOT EXISTS {{event_id_column}} uuid    NULL
