#!/usr/bin/env bash
# Handshake rate: N WebSocket handshakes as fast as the bench can start them
# (CONCURRENCY in flight per bench process, PROCS bench processes), against the
# gateway core (no connect hook) and, with PEERS=1, Rainbow with its connect
# hook on `rainbow-bench backend`, nginx+Nchan, and Pushpin (whose every
# WebSocket open is an HTTP call to the backend, like Rainbow's connect hook).
# Each target is measured REPEAT times, interleaved (round 1: every target,
# round 2: every target, ...), each time on a fresh server; the table gives
# the median and the range.
#
#   bench/connect.sh > connect.jsonl   # JSON lines on stdout, table on stderr
#
# A run is short (18,000 handshakes take about a second) and one process may
# hold at most 20,000 open files, so N cannot grow much: repeat instead.
#
# Environment: N (18000), CONCURRENCY (64), PROCS (2), REPEAT (5), PEERS (1),
# RAINBOW_BIN / BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-18000}
CONCURRENCY=${CONCURRENCY:-64}
PROCS=${PROCS:-2}
REPEAT=${REPEAT:-5}
PEERS=${PEERS:-1}
per_process=$(((N + PROCS - 1) / PROCS))

ensure_release
results="$BENCH_TMP/connect.jsonl"
: >"$results"

# run_connect TARGET URL [GATEWAY_PID]: one rainbow-bench connect run (the
# gateway's CPU and RSS are reported when its pid is given).
run_connect() {
  local target=$1 url=$2 pid=()
  [[ -n "${3:-}" ]] && pid=(--pid "$3")
  wait_quiet
  local busy=$MACHINE_BUSY line
  if ! line=$(bench connect --url "$url" --connections "$N" --rate 0 --concurrency "$CONCURRENCY" \
    --per-process "$per_process" "${pid[@]}" --no-progress); then
    line=$(tag_json '{"bench":"connect"}' "error=run failed (see stderr)")
  fi
  tag_json "$line" "target=$target" "round=$round" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)" | tee -a "$results"
}

[[ $PEERS == 1 ]] && start_backend
for round in $(seq "$REPEAT"); do
  start_gateway "$(dirname "$RAINBOW")"
  run_connect rainbow "$GW_URL" "$GW_PID"
  stop_gateway
  if [[ $PEERS == 1 ]]; then
    start_gateway "$(dirname "$RAINBOW")" --set "connect_url=$BE_URL/connect/"
    run_connect rainbow-with-connect-hook "$GW_URL" "$GW_PID"
    stop_gateway
    if start_nchan; then
      run_connect nchan "ws://127.0.0.1:$NCHAN_PORT/sub/bench"
    else
      tag_json '{"bench":"connect"}' target=nchan "round=$round" "error=nginx+nchan could not be started" | tee -a "$results"
    fi
    stop_nchan
    if start_pushpin; then
      run_connect pushpin "ws://127.0.0.1:$PUSHPIN_PORT/bench"
    else
      tag_json '{"bench":"connect"}' target=pushpin "round=$round" "error=pushpin could not be started" | tee -a "$results"
    fi
    stop_pushpin
  fi
done
python3 bench/table.py "$results" >&2
