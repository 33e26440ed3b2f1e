#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing (infra/setup.sh), builds,
# starts a throw-away broker on its own port, runs lints and the tests, stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/env.sh
bash infra/setup.sh

# The tests' broker is separate from the demo's: its own port and a fresh data directory.
export DRIFTLINE_BROKER_PORT=${DRIFTLINE_TEST_BROKER_PORT:-19092}
export DRIFTLINE_BROKER_DIR=$DRIFTLINE_CACHE/test-broker
bash infra/broker.sh stop || true
rm -rf "$DRIFTLINE_BROKER_DIR"
bash infra/broker.sh start
trap 'bash infra/broker.sh stop' EXIT
export DRIFTLINE_BOOTSTRAP_SERVERS=127.0.0.1:$DRIFTLINE_BROKER_PORT
export DRIFTLINE_PYTHON=$DRIFTLINE_VENV/bin/python

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy (warnings are errors)" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] cargo test" >&2
cargo test --workspace --locked --no-fail-fast "$@"
# The fault suite's short form, on a broker of its own (the full form: infra/faults.sh).
# `cargo test` has just built driftline, send_data and driftline-faults for the integration
# tests; a `cargo build` here would build them again with other features (no dev-dependencies
# unify in), 10 minutes cold, and the next `cargo test` would build them back.
echo "[test] fault suite (short form)" >&2
"$CARGO_TARGET_DIR/debug/driftline-faults" --short
# The scale suite's short form: several instances per service on three brokers, joining,
# leaving and killed mid-replay (the full form: infra/scale.sh).
echo "[test] scale suite (short form)" >&2
"$CARGO_TARGET_DIR/debug/driftline-scale" --short
