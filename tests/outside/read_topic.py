"""Read messages back with clients that are not the relay's own code.

Usage: read_topic.py BROKERS TOPIC COUNT [--cloudevents]

Consumes COUNT messages of TOPIC from the beginning with confluent-kafka
(librdkafka bundled in its wheel, not the relay's build) and prints one JSON
object per message: key and value as hex (byte for byte), headers as text,
the record timestamp, and with --cloudevents the event as the CloudEvents
Python SDK parses it from the Kafka binary-mode headers.
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TIMESTAMP_NOT_AVAILABLE


def cloudevent(message):
    from cloudevents.core.bindings import kafka

    parsed = kafka.from_binary_event(
        kafka.KafkaMessage(
            headers={k: v for k, v in (message.headers() or [])},
            key=message.key(),
            value=message.value(),
        )
    )
    return {
        "id": parsed.get_id(),
        "source": parsed.get_source(),
        "type": parsed.get_type(),
        "specversion": parsed.get_specversion(),
        "time": parsed.get_time().isoformat() if parsed.get_time() else None,
        "datacontenttype": parsed.get_datacontenttype(),
        "data": parsed.get_data(),
    }


def main():
    brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with_cloudevents = "--cloudevents" in sys.argv[4:]
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"outside-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        kind, timestamp = message.timestamp()
        out = {
            "key_hex": None if message.key() is None else message.key().hex(),
            "value_hex": None if message.value() is None else message.value().hex(),
            "headers": {k: v.decode("utf-8") for k, v in (message.headers() or [])},
            "timestamp": None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
        }
        if with_cloudevents:
            out["cloudevent"] = cloudevent(message)
        print(json.dumps(out), flush=True)
        seen += 1
    consumer.close()
    if seen < count:
        sys.exit(f"read {seen} of {count} messages from {topic}")


if __name__ == "__main__":
    main()
