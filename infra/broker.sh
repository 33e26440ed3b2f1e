#!/usr/bin/env bash
# Starts, stops or reports the embedded broker: one Apache Kafka node (KRaft, broker and
# controller in one JVM) on 127.0.0.1:$DRIFTLINE_BROKER_PORT, its controller on the next
# port, data kept under $DRIFTLINE_BROKER_DIR across restarts (formatted on first start).
#   infra/broker.sh start|stop|kill|status
# Optional: DRIFTLINE_BROKER_EXTRA_CONFIG, a properties file appended to the node's config
# (later keys win: listeners, security), and DRIFTLINE_BROKER_FORMAT_ARGS, extra arguments
# for the first format (e.g. --add-scram 'SCRAM-SHA-512=[name=u,password=p]').
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
source "$here/kafka/node.sh"
dir=$DRIFTLINE_BROKER_DIR
port=$DRIFTLINE_BROKER_PORT
cport=${DRIFTLINE_CONTROLLER_PORT:-$((port + 1))}

case "${1:-}" in
start)
    if node_listening "$port"; then
        echo "broker already listening on 127.0.0.1:$port" >&2
        exit 0
    fi
    mkdir -p "$dir"
    node_configure "$dir" 1 "$port" "$cport" \
        "controller.quorum.bootstrap.servers=127.0.0.1:$cport
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1" "${DRIFTLINE_BROKER_EXTRA_CONFIG:-}"
    # shellcheck disable=SC2086 # the format arguments are words on purpose
    eval "node_format \"\$dir\" \"\$(kafka_cluster_id)\" --standalone ${DRIFTLINE_BROKER_FORMAT_ARGS:-}"
    started=$SECONDS
    node_start "$dir" "$port"
    echo "broker started on 127.0.0.1:$port in $((SECONDS - started)) s (Apache Kafka $KAFKA_VERSION, pid $(cat "$dir/broker.pid"), data and broker.log in $dir)" >&2
    ;;
stop)
    node_stop "$dir" "$port"
    echo "broker on 127.0.0.1:$port stopped" >&2
    ;;
kill)
    node_kill "$dir"
    ;;
status)
    if pid=$(node_pid "$dir") && node_listening "$port"; then
        echo "listening on 127.0.0.1:$port (pid $pid, data in $dir)"
    elif node_listening "$port"; then
        echo "something listens on 127.0.0.1:$port, but not the broker of $dir"
    else
        echo "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 start|stop|kill|status" >&2
    exit 2
    ;;
esac
