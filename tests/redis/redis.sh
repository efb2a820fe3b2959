#!/usr/bin/env bash
# A private Redis for the tests and the benchmark: Debian's redis-server
# (7.0, built with TLS), its own directory, a plain port and a TLS port on
# loopback, `requirepass` for the default user, an ACL user `relay`, and
# the append-only file on. Stopped by PID.
#
#   redis.sh install                      apt-get install redis-server, and stop the
#                                         system server the package starts
#   redis.sh start DIR PORT TLS_PORT      start a server in DIR; TLS material in
#                                         $REDIS_SECRETS_DIR (ca.pem, broker.pem,
#                                         broker.key); passwords in DIR/admin.password
#                                         and DIR/relay.password; prints nothing
#   redis.sh replica DIR PORT PRIMARY_DIR start a replica of the server in PRIMARY_DIR,
#                                         with its passwords
#   redis.sh stop DIR                     stop the server in DIR (SIGKILL by PID)
set -euo pipefail

log() { echo "redis: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    if ! command -v redis-server >/dev/null; then
        log "installing redis-server with apt"
        as_root apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >&2
    fi
    # The package starts a server of its own on 6379; the tests run their own.
    if [ -x /etc/init.d/redis-server ] && pgrep -u redis redis-server >/dev/null 2>&1; then
        as_root /etc/init.d/redis-server stop >&2 || true
    fi
}

wait_ready() {
    local dir=$1 port=$2
    for _ in $(seq 1 100); do
        if redis-cli -p "$port" --no-auth-warning -a "$(cat "$dir/admin.password")" ping 2>/dev/null \
            | grep -q PONG; then
            return 0
        fi
        sleep 0.1
    done
    log "the server in $dir did not answer on port $port"
    cat "$dir/redis.log" >&2 || true
    return 1
}

# The configuration both a primary and a replica share.
common_config() {
    local dir=$1 port=$2
    cat <<CONF
bind 127.0.0.1
port $port
dir $dir
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
save ""
appendonly yes
appendfsync everysec
requirepass $(cat "$dir/admin.password")
masterauth $(cat "$dir/admin.password")
user relay on >$(cat "$dir/relay.password") ~* &* +@all
CONF
}

passwords() {
    local dir=$1
    mkdir -p "$dir"
    for user in admin relay; do
        [ -f "$dir/$user.password" ] || openssl rand -hex 12 >"$dir/$user.password"
        chmod 600 "$dir/$user.password"
    done
}

start() {
    local dir=$1 port=$2 tls_port=$3
    local secrets=${REDIS_SECRETS_DIR:?REDIS_SECRETS_DIR names the TLS material}
    passwords "$dir"
    {
        common_config "$dir" "$port"
        cat <<CONF
tls-port $tls_port
tls-cert-file $secrets/broker.pem
tls-key-file $secrets/broker.key
tls-ca-cert-file $secrets/ca.pem
tls-auth-clients optional
CONF
    } >"$dir/redis.conf"
    redis-server "$dir/redis.conf"
    wait_ready "$dir" "$port"
}

replica() {
    local dir=$1 port=$2 primary_dir=$3
    mkdir -p "$dir"
    cp -p "$primary_dir/admin.password" "$primary_dir/relay.password" "$dir/"
    {
        common_config "$dir" "$port"
        echo "replicaof 127.0.0.1 $(awk '$1 == "port" { print $2 }' "$primary_dir/redis.conf")"
    } >"$dir/redis.conf"
    redis-server "$dir/redis.conf"
    wait_ready "$dir" "$port"
}

stop() {
    local dir=$1
    if [ -f "$dir/redis.pid" ]; then
        kill -9 "$(cat "$dir/redis.pid")" 2>/dev/null || true
        rm -f "$dir/redis.pid"
    fi
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    replica) shift; replica "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install|start|replica|stop …" >&2; exit 2 ;;
esac
