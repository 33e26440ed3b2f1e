#!/usr/bin/env bash
# Starts, stops or reports the embedded broker: tansu on 127.0.0.1 with durable SQLite
# storage under $DRIFTLINE_BROKER_DIR (data and committed offsets survive a restart).
#   infra/broker.sh start|stop|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
pidfile="$DRIFTLINE_BROKER_DIR/broker.pid"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$DRIFTLINE_BROKER_PORT") 2>/dev/null; }

case "${1:-}" in
start)
    if listening; then
        echo "broker already listening on 127.0.0.1:$DRIFTLINE_BROKER_PORT" >&2
        exit 0
    fi
    [ -x "$TANSU_BIN" ] || { echo "no broker at $TANSU_BIN: run infra/setup.sh" >&2; exit 1; }
    mkdir -p "$DRIFTLINE_BROKER_DIR"
    # tansu reads the sqlite path relative to its working directory. Its own log level is
    # pinned: at info it traces every SQL statement, which costs more CPU than the work.
    # setsid: its own session, so a Ctrl-C meant for `driftline up` does not reach it
    # before the services have drained.
    # exec all the way down, so the recorded pid is tansu's own (a non-leader process:
    # setsid does not fork) and `stop` reaches it.
    (
        cd "$DRIFTLINE_BROKER_DIR"
        RUST_LOG="${DRIFTLINE_BROKER_LOG:-warn}" exec setsid nohup "$TANSU_BIN" broker \
            --storage-engine "sqlite://tansu.db" \
            --listener-url "tcp://127.0.0.1:$DRIFTLINE_BROKER_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$DRIFTLINE_BROKER_PORT" \
            >>broker.log 2>&1 </dev/null
    ) &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        if listening; then
            echo "broker started on 127.0.0.1:$DRIFTLINE_BROKER_PORT (pid $(cat "$pidfile"), data in $DRIFTLINE_BROKER_DIR)" >&2
            exit 0
        fi
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.2
    done
    echo "broker did not start; last log lines:" >&2
    tail -n 20 "$DRIFTLINE_BROKER_DIR/broker.log" >&2 || true
    exit 1
    ;;
stop)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "broker stopped" >&2
    fi
    rm -f "$pidfile"
    # A broker started by an older version of this script (which recorded a wrapper's pid)
    # or whose directory was removed: find it by the port it listens on.
    if listening; then
        pkill -f -- "--listener-url tcp://127.0.0.1:$DRIFTLINE_BROKER_PORT" || true
        for _ in $(seq 1 50); do listening || break; sleep 0.1; done
        echo "broker on 127.0.0.1:$DRIFTLINE_BROKER_PORT stopped" >&2
    fi
    ;;
status)
    if listening; then echo "listening on 127.0.0.1:$DRIFTLINE_BROKER_PORT"; else echo "not running"; exit 1; fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
