#!/usr/bin/env bash
# Every scenario of docs/PERFORMANCE.md in one run, with the peers where they
# apply: handshakes (bench/connect.sh), fan-out (bench/fanout.sh), rpc
# overhead (bench/rpc.sh) and, with CHURN_SECS set, churn (bench/churn.sh;
# the recorded run is 600 s). JSON lines go to stdout and to OUT (default
# bench/results/compare-DATE.jsonl); the combined table to
# stderr at the end.
#
#   bench/compare.sh > all.jsonl
#   CHURN_SECS=600 bench/compare.sh
#
# Every variable of the scripts it runs applies (N, START, FIXED, C, ...);
# N is the fan-out's subscriber count here (connect.sh uses CONNECT_N, 18000).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p bench/results
OUT=${OUT:-bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
: >"$OUT"
echo "results go to $OUT" >&2
{
  date -u +%FT%TZ
  uname -srm
  echo "nproc $(nproc)"
  grep MemTotal /proc/meminfo
} >&2

N=${CONNECT_N:-18000} bench/connect.sh | tee -a "$OUT"
bench/fanout.sh | tee -a "$OUT"
bench/rpc.sh | tee -a "$OUT"
if [[ -n "${CHURN_SECS:-}" ]]; then
  SECS=$CHURN_SECS bench/churn.sh | tee -a "$OUT"
fi
python3 bench/table.py "$OUT" >&2
