#!/usr/bin/env bash
# The scale suite: the whole loop on three brokers with several instances of every service
# in their consumer groups; instances join, leave and are killed with kill -9 mid-replay;
# then a table of every event accounted for (see tests/src/bin/scale.rs). Full form by
# default (20k requests per model over 4 minutes); `--short` is the form CI runs; `--help`
# lists the knobs.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/env.sh
bash infra/setup.sh
cargo build --locked --bin driftline --bin send_data --bin driftline-scale
exec "$CARGO_TARGET_DIR/debug/driftline-scale" "$@"
