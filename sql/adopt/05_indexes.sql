-- `migrate --adopt`, step 5: the relay's indexes, built CONCURRENTLY (writers
-- go on). One statement per line group: CONCURRENTLY cannot share a
-- transaction. An index left invalid by an interrupted build is dropped
-- first (see 05_invalid_indexes.sql).
CREATE INDEX CONCURRENTLY IF NOT EXISTS "{{name}}_pending_id_idx"
    ON {{table}} ({{sequence}}) WHERE status = 'pending';

CREATE INDEX CONCURRENTLY IF NOT EXISTS "{{name}}_pending_key_idx"
    ON {{table}} ({{key}}, {{sequence}}) WHERE status = 'pending' AND {{key}} IS NOT NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS "{{name}}_dead_id_idx"
    ON {{table}} ({{sequence}}) WHERE status = 'dead'
