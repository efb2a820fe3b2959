#!/usr/bin/env bash
# A local demo: bring up a local PostgreSQL and a Kafka-protocol
# broker (Tansu), migrate, start the relay, insert demo events inside a
# transaction (and one that rolls back), then show them arriving in Kafka and
# in /metrics. Everything stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

export OUTBOX_SERVICES_DIR="${OUTBOX_SERVICES_DIR:-/tmp/outbox-relay-demo}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing what is missing (PostgreSQL, Tansu, kcat, promtool)"
bash tests/services.sh install
step "starting PostgreSQL and Tansu on free local ports"
eval "$(bash tests/services.sh start)"
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    bash tests/services.sh stop
}
trap cleanup EXIT

step "building outbox-relay"
cargo build --locked --quiet --bin outbox-relay --example tail-topic
relay=target/debug/outbox-relay
tail_topic=target/debug/examples/tail-topic

export OUTBOX_DATABASE_URL="$OUTBOX_TEST_DATABASE_URL"
export OUTBOX_KAFKA_BROKERS="$OUTBOX_TEST_KAFKA_BROKERS"
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export OUTBOX_METRICS_ADDR="127.0.0.1:$metrics_port"

step "outbox-relay migrate --notify-trigger"
"$relay" migrate --notify-trigger
"$OUTBOX_TEST_TANSU" topic create --broker "tcp://$OUTBOX_KAFKA_BROKERS" demo.orders --partitions 3 >/dev/null

step "outbox-relay run (logs below)"
"$relay" run &
relay_pid=$!
for _ in $(seq 1 100); do
    if curl -fs "http://$OUTBOX_METRICS_ADDR/readyz" >/dev/null; then break; fi
    sleep 0.1
done
curl -fsS "http://$OUTBOX_METRICS_ADDR/readyz"

step "an application transaction writes business rows and outbox rows, and commits"
psql -q "$OUTBOX_DATABASE_URL" <<'SQL'
BEGIN;
INSERT INTO outbox (topic, message_key, payload, headers)
VALUES ('demo.orders', 'order-1', '{"type": "OrderPlaced", "total": 42.5}', '{"trace-id": "t-1"}'),
       ('demo.orders', 'order-1', '{"type": "OrderPaid"}', '{}');
SELECT outbox_enqueue('demo.orders', 'order-2', '{"type": "OrderPlaced", "total": 7}', '{}');
COMMIT;
BEGIN;
INSERT INTO outbox (topic, message_key, payload) VALUES ('demo.orders', 'order-3', '{"type": "NeverHappened"}');
ROLLBACK;
SQL
echo "committed 3 events; rolled back 1"

step "what a Kafka consumer sees on demo.orders (the rolled-back event is absent)"
sleep 0.5
"$tail_topic" "$OUTBOX_KAFKA_BROKERS" demo.orders 2

step "outbox-relay status"
"$relay" status

step "/metrics (excerpt)"
sleep 0.3
curl -fsS "http://$OUTBOX_METRICS_ADDR/metrics" \
    | grep -E '^outbox_(published_messages_total|pending_messages|oldest_pending_age_seconds|dead_messages|delivery_latency_seconds_(count|sum))'

step "stopping the relay with SIGTERM"
kill -TERM "$relay_pid"
wait "$relay_pid"
relay_pid=""
echo "relay exited cleanly"
