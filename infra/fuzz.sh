#!/usr/bin/env bash
# Fuzzes the decoders of what comes from outside, with cargo fuzz (libFuzzer, on the
# nightly toolchain): every event's Avro decoder (`avro_decode`) and the predictor's JSON
# bodies (`json_bodies`). Each target runs for --seconds (default 600) from its corpus in
# fuzz/corpus/<target>, which is minimised and kept afterwards. Inputs that once crashed
# (fuzz/regressions/<target>/) are run first. A crash stops the run and leaves its input
# under fuzz/artifacts/<target>/. Not part of CI (it takes its time).
#
#   bash infra/fuzz.sh                      # both targets, 10 minutes each
#   bash infra/fuzz.sh --seconds 60 json_bodies
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/env.sh

seconds=600
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(avro_decode json_bodies)

if ! rustup run nightly rustc --version > /dev/null 2>&1; then
  echo "[fuzz] installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz > /dev/null; then
  echo "[fuzz] installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

# The fuzz workspace builds with sanitizer flags: its own target directory.
target_dir=$DRIFTLINE_CACHE/fuzz-target
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  if compgen -G "fuzz/regressions/$t/*" > /dev/null; then
    echo "[fuzz] $t: the inputs that crashed before" >&2
    cargo +nightly fuzz run --target-dir "$target_dir" "$t" fuzz/regressions/"$t"/* -- -rss_limit_mb=2048
  fi
  echo "[fuzz] $t for ${seconds}s from $(ls "$corpus" | wc -l) corpus inputs" >&2
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
  echo "[fuzz] $t: minimising the corpus" >&2
  cargo +nightly fuzz cmin --target-dir "$target_dir" "$t" "$corpus" > /dev/null 2>&1
  echo "[fuzz] $t: $(ls "$corpus" | wc -l) inputs kept in $corpus" >&2
done
