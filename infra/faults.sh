#!/usr/bin/env bash
# The fault suite: the whole loop on Apache Kafka under kill -9, broker loss, a full disk
# and 10 MB messages, then a table of every event accounted for (see
# tests/src/bin/faults.rs). Full form by default (100k requests, 20 kills, a 60 s outage,
# about ten minutes); `--short` is the form CI runs; `--help` lists the knobs.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/env.sh
bash infra/setup.sh
cargo build --locked --bin driftline --bin send_data --bin driftline-faults
exec "$CARGO_TARGET_DIR/debug/driftline-faults" "$@"
