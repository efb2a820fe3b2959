-- The RabbitMQ rule for `topic`, which is a routing key there: any UTF-8 of
-- 1 to 255 bytes (an AMQP short string), such as `order/created` or
-- `orders:eu`. Installed instead of Kafka's rule by `migrate --sink
-- rabbitmq`, checked in the application's own transaction.
--
-- As with Kafka's rule: pending rows only (so the relay's UPDATE that makes
-- an old invalid row `dead` is never refused), NOT VALID (no scan), and a
-- constraint holding another rule is replaced in this same transaction.
DO $$
DECLARE
    existing text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO existing
    FROM pg_constraint
    WHERE conrelid = '{{table}}'::regclass AND conname = '{{name}}_topic_valid';
    -- Kafka's rule has no `octet_length`; NATS's subject rule has a pattern.
    IF existing IS NOT NULL
       AND (existing NOT LIKE '%octet_length%' OR existing LIKE '%!~%') THEN
        ALTER TABLE {{table}} DROP CONSTRAINT "{{name}}_topic_valid";
        existing := NULL;
    END IF;
    IF existing IS NULL THEN
        ALTER TABLE {{table}} ADD CONSTRAINT "{{name}}_topic_valid"
            CHECK (status <> 'pending'
                   OR octet_length(topic) BETWEEN 1 AND 255) NOT VALID;
    END IF;
END
$$;
