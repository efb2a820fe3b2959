-- The outbox table, its constraints and the indexes the relay's queries need.
-- Idempotent: every statement can run again on an up-to-date schema.
-- {{table}} is the quoted, possibly schema-qualified table; {{name}} its bare name;
-- {{enqueue_function}} the quoted name of the enqueue function beside it.
-- With `migrate --partition-by`, the table is range-partitioned on created_at,
-- so its primary key also holds created_at; indexes made here are made on
-- every partition.

CREATE TABLE IF NOT EXISTS {{table}} (
    -- Columns applications write.
    topic           text        NOT NULL,
    message_key     {{key_type}} NULL,
    payload         {{payload_type}} NULL,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Columns the relay owns.
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_attempt_at timestamptz NULL,
    last_error      text        NULL,
    published_at    timestamptz NULL,
    CONSTRAINT "{{name}}_pkey" PRIMARY KEY ({{primary_key}}),
    CONSTRAINT "{{name}}_status_valid" CHECK (status IN ('pending', 'published', 'dead')),
    CONSTRAINT "{{name}}_attempts_not_negative" CHECK (attempts >= 0),
    CONSTRAINT "{{name}}_headers_is_object" CHECK (jsonb_typeof(headers) = 'object')
){{partitioning}};

-- The claim walks this index in id order: Limit -> LockRows -> Index Scan.
CREATE INDEX IF NOT EXISTS "{{name}}_pending_id_idx"
    ON {{table}} (id) WHERE status = 'pending';

-- Per-key order check: "is an earlier row of this key still pending?"
CREATE INDEX IF NOT EXISTS "{{name}}_pending_key_idx"
    ON {{table}} (message_key, id) WHERE status = 'pending' AND message_key IS NOT NULL;

-- Dead rows are few; this keeps `status`, the metrics and `requeue` cheap.
CREATE INDEX IF NOT EXISTS "{{name}}_dead_id_idx"
    ON {{table}} (id) WHERE status = 'dead';

-- Enqueue helper: the same as a plain INSERT in the caller's transaction.
CREATE OR REPLACE FUNCTION {{enqueue_function}}(
    p_topic text,
    p_key {{key_type}},
    p_payload {{payload_type}},
    p_headers jsonb DEFAULT '{}'::jsonb
) RETURNS uuid
LANGUAGE sql
AS $$
    INSERT INTO {{table}} (topic, message_key, payload, headers)
    VALUES (p_topic, p_key, p_payload, COALESCE(p_headers, '{}'::jsonb))
    RETURNING event_id
$$;
