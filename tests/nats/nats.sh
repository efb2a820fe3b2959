#!/usr/bin/env bash
# A private nats-server for the tests and the benchmark: Debian's
# nats-server (2.9), JetStream on with a store directory of its own, on a
# loopback port. Stopped by PID.
#
#   nats.sh install                   apt-get install nats-server
#   nats.sh start DIR PORT [MODE]     start a server in DIR; MODE is
#                                     `password` (the default: user `relay`, password
#                                     in DIR/relay.password), `token` (a token in
#                                     DIR/token), or `tls` (`password`, and TLS with
#                                     the material in $NATS_SECRETS_DIR: ca.pem,
#                                     broker.pem, broker.key); prints nothing
#   nats.sh stop DIR                  stop the server in DIR (SIGKILL by PID)
set -euo pipefail

log() { echo "nats: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    if ! command -v nats-server >/dev/null; then
        log "installing nats-server with apt"
        as_root apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nats-server >&2
    fi
}

secret() {
    local file=$1
    [ -f "$file" ] || openssl rand -hex 12 >"$file"
    chmod 600 "$file"
}

start() {
    local dir=$1 port=$2 mode=${3:-password}
    mkdir -p "$dir/js"
    secret "$dir/relay.password"
    {
        echo "listen: 127.0.0.1:$port"
        echo "server_name: outbox-$port"
        echo "jetstream { store_dir: \"$dir/js\", max_memory_store: 256MB, max_file_store: 4GB }"
        case "$mode" in
            token)
                secret "$dir/token"
                echo "authorization { token: \"$(cat "$dir/token")\" }"
                ;;
            password | tls)
                echo "authorization { users: [ { user: relay, password: \"$(cat "$dir/relay.password")\" } ] }"
                ;;
            *) log "unknown mode $mode"; exit 2 ;;
        esac
        if [ "$mode" = tls ]; then
            local secrets=${NATS_SECRETS_DIR:?NATS_SECRETS_DIR names the TLS material}
            echo "tls { cert_file: \"$secrets/broker.pem\", key_file: \"$secrets/broker.key\", ca_file: \"$secrets/ca.pem\" }"
        fi
    } >"$dir/nats.conf"
    setsid nats-server -c "$dir/nats.conf" -P "$dir/nats.pid" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
        if grep -q "Server is ready" "$dir/nats.log" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "the server in $dir did not start"
    cat "$dir/nats.log" >&2 || true
    return 1
}

stop() {
    local dir=$1
    if [ -f "$dir/nats.pid" ]; then
        kill -9 "$(cat "$dir/nats.pid")" 2>/dev/null || true
        rm -f "$dir/nats.pid"
    fi
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install|start|stop …" >&2; exit 2 ;;
esac
