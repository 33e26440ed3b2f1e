#!/usr/bin/env bash
# Three Apache Kafka KRaft nodes on loopback, each broker and controller with its own data
# directory, as a small production cluster is laid out: replication factor 3,
# min.insync.replicas 2, so one node can be lost without losing a write.
#   infra/cluster.sh start|stop|status|bootstrap
#   infra/cluster.sh kill N       kill -9 node N (1-3), as a crash would
#   infra/cluster.sh restart N    start node N again (after kill or stop)
#   infra/cluster.sh stop N       stop node N cleanly
# Ports: brokers $DRIFTLINE_CLUSTER_PORT and the next two (default 29092-29094), controllers
# 100 above them. Data under $DRIFTLINE_CLUSTER_DIR (default ~/.cache/driftline/cluster),
# kept across stop/start; `reset` removes it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
source "$here/kafka/node.sh"
base=${DRIFTLINE_CLUSTER_PORT:-29092}
root=${DRIFTLINE_CLUSTER_DIR:-$DRIFTLINE_CACHE/cluster}
nodes=(1 2 3)

port() { echo $((base + $1 - 1)); }
cport() { echo $((base + 100 + $1 - 1)); }
dir() { echo "$root/node-$1"; }
bootstrap() { local n out=(); for n in "${nodes[@]}"; do out+=("127.0.0.1:$(port "$n")"); done; (IFS=,; echo "${out[*]}"); }
voters() { local n out=(); for n in "${nodes[@]}"; do out+=("$n@127.0.0.1:$(cport "$n")"); done; (IFS=,; echo "${out[*]}"); }
check_node() { [[ ${1:-} =~ ^[1-3]$ ]] || { echo "node must be 1, 2 or 3" >&2; exit 2; }; }

configure() {
    node_configure "$(dir "$1")" "$1" "$(port "$1")" "$(cport "$1")" \
        "controller.quorum.voters=$(voters)
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
default.replication.factor=3
min.insync.replicas=2" "${DRIFTLINE_BROKER_EXTRA_CONFIG:-}"
}

# Starts a node in the background; the caller waits. All three must be up for the quorum
# (and so for any one of them to serve metadata) on the first start.
start_node() {
    local n=$1
    configure "$n"
    node_format "$(dir "$n")" "$(cat "$root/cluster.id")"
    node_start "$(dir "$n")" "$(port "$n")"
}

case "${1:-}" in
start)
    if [ -n "${2:-}" ]; then
        check_node "$2"
        [ -f "$root/cluster.id" ] || { echo "no cluster in $root: start all three first" >&2; exit 1; }
        start_node "$2"
        exit 0
    fi
    mkdir -p "$root"
    # One id for the three, made before they start in parallel.
    [ -f "$root/cluster.id" ] || kafka_cluster_id >"$root/cluster.id"
    started=$SECONDS
    pids=()
    for n in "${nodes[@]}"; do start_node "$n" & pids+=($!); done
    failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    if ((failed)); then echo "cluster did not start (logs: $root/node-*/broker.log)" >&2; exit 1; fi
    echo "cluster of 3 started in $((SECONDS - started)) s (Apache Kafka $KAFKA_VERSION, data in $root)" >&2
    echo "bootstrap servers: $(bootstrap)" >&2
    bootstrap
    ;;
restart)
    check_node "${2:-}"
    node_start "$(dir "$2")" "$(port "$2")"
    echo "node $2 back on 127.0.0.1:$(port "$2")" >&2
    ;;
kill)
    check_node "${2:-}"
    node_kill "$(dir "$2")"
    echo "node $2 killed (SIGKILL)" >&2
    ;;
stop)
    if [ -n "${2:-}" ]; then check_node "$2"; nodes=("$2"); fi
    for n in "${nodes[@]}"; do node_stop "$(dir "$n")" "$(port "$n")" & done
    wait
    echo "stopped node(s) ${nodes[*]}" >&2
    ;;
reset)
    "$0" stop
    rm -rf "$root"
    ;;
status)
    down=0
    for n in "${nodes[@]}"; do
        if pid=$(node_pid "$(dir "$n")") && node_listening "$(port "$n")"; then
            echo "node $n: up on 127.0.0.1:$(port "$n") (pid $pid)"
        else
            echo "node $n: down"; down=1
        fi
    done
    echo "bootstrap servers: $(bootstrap)"
    exit $down
    ;;
bootstrap)
    bootstrap
    ;;
*)
    echo "usage: $0 start|stop|status|bootstrap|reset, or kill|restart|stop|start N" >&2
    exit 2
    ;;
esac
