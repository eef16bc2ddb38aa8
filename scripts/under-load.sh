#!/usr/bin/env bash
# Run the test suite N times in a row while one CPU burner keeps another core busy.
# Usage: scripts/under-load.sh [N] [pytest args...]   (default N=5, the whole suite)
# Stops at the first failing run; prints each run's wall time and result.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
shift || true
python3 -c 'while True: pass' &
burner=$!
trap 'kill "$burner" 2>/dev/null' EXIT
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if make test PYTEST_ARGS="-p no:cacheprovider -q $*" >"/tmp/pgqrs-under-load-$i.log" 2>&1; then
    echo "run $i/$runs: passed in $(( $(date +%s) - start )) s ($(tail -n 1 "/tmp/pgqrs-under-load-$i.log"))"
  else
    echo "run $i/$runs: FAILED in $(( $(date +%s) - start )) s; log: /tmp/pgqrs-under-load-$i.log"
    grep -E "^(FAILED|ERROR)" "/tmp/pgqrs-under-load-$i.log" | head -20
    exit 1
  fi
done
