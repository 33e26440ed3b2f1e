# One Apache Kafka KRaft node (broker and controller in one JVM): configure, format once,
# start with a readiness wait, stop, kill. Sourced by infra/broker.sh (one node) and
# infra/cluster.sh (three); every setting they share is in infra/kafka/broker.properties.
# Needs infra/env.sh sourced first and the jars installed by infra/setup.sh.

KAFKA_CONF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

kafka_classpath() { printf '%s/*' "$KAFKA_LIBS"; }

# kafka_java MAIN ARGS...: a Kafka main class on the installed jars, logging to stdout.
kafka_java() {
    [ -d "$KAFKA_LIBS" ] || { echo "no Kafka at $KAFKA_LIBS: run infra/setup.sh" >&2; return 1; }
    java -Dlog4j2.configurationFile="$KAFKA_CONF_DIR/log4j2.properties" \
        -cp "$(kafka_classpath)" "$@"
}

# A fresh KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid;
# it may start with "-", hence --cluster-id=ID below).
kafka_cluster_id() { head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# node_configure DIR NODE_ID PORT CONTROLLER_PORT QUORUM_LINE [EXTRA_PROPERTIES_FILE]
# Writes DIR/server.properties: the shared settings, then this node's, then the extra file
# (later keys win, so a test can add listeners or security settings).
node_configure() {
    local dir=$1 id=$2 port=$3 cport=$4 quorum=$5 extra=${6:-}
    mkdir -p "$dir/data"
    {
        grep -v '^driftline\.' "$KAFKA_CONF_DIR/broker.properties"
        echo
        echo "# this node (written by infra/kafka/node.sh)"
        echo "node.id=$id"
        echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "log.dirs=$dir/data"
        echo "$quorum"
        if [ -n "$extra" ]; then
            echo
            echo "# from $extra"
            cat "$extra"
        fi
    } >"$dir/server.properties"
}

# node_format DIR CLUSTER_ID ARGS...: formats the node's storage unless already formatted.
node_format() {
    local dir=$1 cid=$2
    shift 2
    [ -f "$dir/data/meta.properties" ] && return 0
    kafka_java kafka.tools.StorageTool format --ignore-formatted --cluster-id="$cid" \
        -c "$dir/server.properties" "$@" >>"$dir/broker.log" 2>&1 || {
        echo "formatting $dir failed; last log lines:" >&2
        tail -n 20 "$dir/broker.log" >&2
        return 1
    }
}

node_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_pid() { [ -f "$1/broker.pid" ] && kill -0 "$(cat "$1/broker.pid")" 2>/dev/null && cat "$1/broker.pid"; }

# node_start DIR PORT: starts the JVM in its own session (a Ctrl-C meant for `driftline up`
# must not reach it before the services have drained), records the JVM's own pid, and
# waits until the port listens and then answers a metadata request.
node_start() {
    local dir=$1 port=$2 heap
    heap=$(sed -n 's/^driftline\.heap=//p' "$KAFKA_CONF_DIR/broker.properties")
    if node_listening "$port"; then
        echo "broker already listening on 127.0.0.1:$port" >&2
        return 0
    fi
    (
        cd "$dir"
        exec setsid nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KAFKA_CONF_DIR/log4j2.properties" \
            -cp "$(kafka_classpath)" kafka.Kafka "$dir/server.properties" \
            >>"$dir/broker.log" 2>&1 </dev/null
    ) &
    echo $! >"$dir/broker.pid"
    local deadline=$((SECONDS + ${DRIFTLINE_BROKER_START_TIMEOUT:-90}))
    while ! node_listening "$port"; do
        if ! kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null || ((SECONDS > deadline)); then
            echo "broker on port $port did not start; last log lines of $dir/broker.log:" >&2
            tail -n 20 "$dir/broker.log" >&2
            return 1
        fi
        sleep 0.2
    done
    # Listening is not serving: ask for metadata as a client would (the admin tool retries
    # until the broker has joined the quorum and is unfenced).
    if ! timeout $((deadline - SECONDS + 5)) java -cp "$(kafka_classpath)" \
        -Dlog4j2.configurationFile="$KAFKA_CONF_DIR/log4j2.properties" -Dlog4j2.level=error \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list \
        >/dev/null 2>>"$dir/broker.log"; then
        echo "broker on port $port listens but answers no metadata request; see $dir/broker.log" >&2
        return 1
    fi
}

# node_stop DIR PORT: SIGTERM (a controlled shutdown), SIGKILL after 30 s.
node_stop() {
    local dir=$1 port=$2 pid
    if pid=$(node_pid "$dir"); then
        kill "$pid"
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/broker.pid"
    # A broker whose pid file is gone (its directory was removed): find it by its config.
    if node_listening "$port"; then
        pkill -f -- "kafka.Kafka $dir/server.properties" || true
        for _ in $(seq 1 100); do node_listening "$port" || break; sleep 0.1; done
    fi
}

# node_kill DIR: SIGKILL, as a crash would.
node_kill() {
    local pid
    if pid=$(node_pid "$1"); then
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$1/broker.pid"
}
