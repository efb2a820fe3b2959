-- The NATS rule for `topic`, which is a subject there: dot-separated
-- tokens, none empty, no whitespace, no wildcard token (`*` or `>`, which
-- subscribe and cannot be published to), 1 to 255 bytes, such as
-- `orders.created`. Installed instead of Kafka's rule by `migrate --sink
-- nats`, checked in the application's own transaction.
--
-- As with Kafka's rule: pending rows only (so the relay's UPDATE that makes
-- an old invalid row `dead` is never refused), NOT VALID (no scan), and a
-- constraint holding another rule is replaced in this same transaction.
-- Each rule knows its own text: this one has both `octet_length` and a
-- pattern; the routing-key rule has no pattern; Kafka's has no
-- `octet_length`.
DO $$
DECLARE
    existing text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO existing
    FROM pg_constraint
    WHERE conrelid = '{{table}}'::regclass AND conname = '{{name}}_topic_valid';
    IF existing IS NOT NULL
       AND (existing NOT LIKE '%octet_length%' OR existing NOT LIKE '%!~%') THEN
        ALTER TABLE {{table}} DROP CONSTRAINT "{{name}}_topic_valid";
        existing := NULL;
    END IF;
    IF existing IS NULL THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_topic_valid"
            CHECK (status <> 'pending'
                   OR (octet_length(topic) BETWEEN 1 AND 255
                       AND topic !~ '[[:space:]]'
                       AND topic !~ '(^|\.)(\*|>)?(\.|$)')) NOT VALID;
    END IF;
END
$$;
