#!/usr/bin/env bash
# A private RabbitMQ node for the tests and the benchmark: Debian's
# rabbitmq-server (3.10), its own node name, data directory, configuration
# file and distribution port, an AMQP listener and an AMQPS listener on
# loopback, a user with a password and a vhost. Stopped by PID.
#
#   rabbitmq.sh install                       apt-get install rabbitmq-server, and stop
#                                             the system node the package starts
#   rabbitmq.sh start DIR AMQP AMQPS DIST     start a node in DIR; TLS material in
#                                             $RABBITMQ_SECRETS_DIR (ca.pem, broker.pem,
#                                             broker.key); prints nothing
#   rabbitmq.sh ctl DIR ARGS…                 rabbitmqctl against the node in DIR
#   rabbitmq.sh users DIR VHOST USER PASSWORD a vhost, and a user with every permission on it
#   rabbitmq.sh stop DIR                      stop the node in DIR (SIGKILL by PID)
set -euo pipefail

# Debian's /usr/sbin wrappers switch to the rabbitmq user and its home; the
# scripts behind them run a node of our own as the caller.
RABBITMQ_BIN=/usr/lib/rabbitmq/bin

log() { echo "rabbitmq: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    if [ ! -x "$RABBITMQ_BIN/rabbitmq-server" ]; then
        log "installing rabbitmq-server with apt"
        as_root apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >&2
    fi
    # The package starts a node of its own on 5672; the tests run their own.
    if [ -x /etc/init.d/rabbitmq-server ] && pgrep -u rabbitmq beam.smp >/dev/null 2>&1; then
        as_root /etc/init.d/rabbitmq-server stop >&2 || true
    fi
}

# Written by `start`: a node name unique on this host (the AMQP port in it).
node_name() {
    cat "$1/nodename"
}

node_env() {
    local dir=$1
    export HOME="$dir"
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$dir")
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
    export RABBITMQ_USE_LONGNAME=false
}

start() {
    local dir=$1 amqp=$2 amqps=$3 dist=$4
    local secrets=${RABBITMQ_SECRETS_DIR:?RABBITMQ_SECRETS_DIR names the TLS material}
    mkdir -p "$dir/log" "$dir/mnesia"
    echo "outbox-$amqp@localhost" >"$dir/nodename"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp
listeners.ssl.default = 127.0.0.1:$amqps
ssl_options.cacertfile = $secrets/ca.pem
ssl_options.certfile = $secrets/broker.pem
ssl_options.keyfile = $secrets/broker.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users = none
log.console = false
log.file.level = warning
CONF
    echo '[].' >"$dir/enabled_plugins"
    # The Erlang cookie lives in HOME: one per node directory.
    openssl rand -hex 20 >"$dir/.erlang.cookie"
    chmod 400 "$dir/.erlang.cookie"
    (
        node_env "$dir"
        export RABBITMQ_DIST_PORT=$dist
        nohup "$RABBITMQ_BIN/rabbitmq-server" >"$dir/server.log" 2>&1 &
        echo $! >"$dir/launcher.pid"
    )
    # await_startup needs the node registered with epmd first.
    for _ in $(seq 1 300); do
        if ctl "$dir" ping >/dev/null 2>&1; then
            ctl "$dir" await_startup --timeout 60 >/dev/null
            return 0
        fi
        sleep 0.1
    done
    log "the node in $dir did not start; see $dir/server.log"
    return 1
}

ctl() {
    local dir=$1
    shift
    (
        node_env "$dir"
        "$RABBITMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"
    )
}

users() {
    local dir=$1 vhost=$2 user=$3 password=$4
    ctl "$dir" add_vhost "$vhost" >/dev/null
    ctl "$dir" add_user "$user" "$password" >/dev/null
    ctl "$dir" set_permissions -p "$vhost" "$user" '.*' '.*' '.*' >/dev/null
}

stop() {
    local dir=$1
    for pid_file in "$dir/rabbitmq.pid" "$dir/launcher.pid"; do
        if [ -f "$pid_file" ]; then
            kill -9 "$(cat "$pid_file")" 2>/dev/null || true
        fi
    done
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    ctl) shift; ctl "$@" ;;
    users) shift; users "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install|start DIR AMQP AMQPS DIST|ctl DIR ARGS…|users DIR VHOST USER PASSWORD|stop DIR" >&2; exit 2 ;;
esac
