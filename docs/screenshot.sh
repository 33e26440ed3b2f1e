#!/usr/bin/env bash
# Takes docs/dashboard.png from a running `driftline up` (the README's first command, in
# another terminal): waits until the replay has produced drift reports and a retrain, then
# lets headless chromium render the dashboard (its polling runs on virtual time).
#   bash docs/screenshot.sh [DASHBOARD_URL] [MIN_MODEL_VERSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:-http://127.0.0.1:8090}
min_versions=${2:-3}
browser=${DRIFTLINE_CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
echo "waiting for $min_versions model versions on $url ..."
until versions=$(curl -fsS "$url/api/dashboard" 2>/dev/null |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("models", [])))' 2>/dev/null) &&
  [ "$versions" -ge "$min_versions" ]; do
  sleep 5
done
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
  --no-first-run --user-data-dir="$profile" --window-size=1400,1500 \
  --virtual-time-budget=8000 --screenshot="$PWD/docs/dashboard.png" "$url/" 2>/dev/null
echo "wrote docs/dashboard.png ($versions model versions on the dashboard)"
