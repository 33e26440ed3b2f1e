#!/usr/bin/env bash
# The soak: the whole loop on Apache Kafka under steady traffic (30 minutes by default),
# sampled every 10 s, then plotted as docs/soak.png (see tests/src/bin/soak.rs). A bench
# run, not CI. Arguments go to the soak (`--rate`, `--duration`, `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/env.sh
bash infra/setup.sh
cargo build --locked --bin driftline --bin send_data --bin driftline-soak
if ! "$DRIFTLINE_VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "soak: installing matplotlib into $DRIFTLINE_VENV for the plot" >&2
    "$DRIFTLINE_VENV/bin/pip" install -q --disable-pip-version-check matplotlib
fi
out="${DRIFTLINE_SOAK_OUT:-$HOME/.cache/driftline/soak}"
mkdir -p "$out"
"$CARGO_TARGET_DIR/debug/driftline-soak" --csv "$out/soak.csv" "$@" | tee "$out/summary.md"
"$DRIFTLINE_VENV/bin/python" tests/soak/plot.py "$out/soak.csv" docs/soak.png
echo "soak: samples in $out/soak.csv, summary in $out/summary.md, plot in docs/soak.png" >&2
