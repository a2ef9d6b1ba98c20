#!/usr/bin/env bash
# Connection churn: hold N connections to the gateway core (no hooks) while
# closing and reopening FRACTION of them per second for SECS seconds, sampling
# the gateway's RSS; compares the end with the RSS after the first minute.
#
#   N=15000 SECS=600 bench/churn.sh > churn.jsonl   # JSON line on stdout, table on stderr
#
# Environment: N (15000), FRACTION (0.05 per second), SECS (600), SAMPLE (5 s),
# BASELINE (60 s), RATE (opening rate, 2000/s), RAINBOW_BIN / BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-15000}
FRACTION=${FRACTION:-0.05}
SECS=${SECS:-600}
SAMPLE=${SAMPLE:-5}
BASELINE=${BASELINE:-60}
RATE=${RATE:-2000}

ensure_release
start_gateway "$(dirname "$RAINBOW")"
wait_quiet
busy=$MACHINE_BUSY
line=$(bench churn --url "$GW_URL" --connections "$N" --rate "$RATE" --fraction "$FRACTION" \
  --duration "$SECS" --sample-every "$SAMPLE" --baseline-at "$BASELINE" --pid "$GW_PID" --no-progress)
line=$(tag_json "$line" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)")
echo "$line"
echo "$line" | python3 bench/table.py >&2
