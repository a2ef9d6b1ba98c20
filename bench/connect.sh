#!/usr/bin/env bash
# Handshake rate: N WebSocket handshakes as fast as CONCURRENCY allows,
# against the gateway core (no connect hook), and with PEERS=1 against
# nginx+Nchan and Pushpin (whose every WebSocket open is an HTTP call to the
# backend, like Rainbow's connect hook; Rainbow with the hook is measured too).
#
#   N=10000 bench/connect.sh > connect.jsonl   # JSON lines on stdout, table on stderr
#
# Environment: N (10000), CONCURRENCY (per bench process, 64), PROCS (bench
# processes, 1; more splits N over workers), PEERS (1), RAINBOW_BIN / BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-10000}
CONCURRENCY=${CONCURRENCY:-64}
PROCS=${PROCS:-1}
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
  tag_json "$line" "target=$target" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)" | tee -a "$results"
}

start_gateway "$(dirname "$RAINBOW")"
run_connect rainbow "$GW_URL" "$GW_PID"
stop_gateway

if [[ $PEERS == 1 ]]; then
  start_backend
  start_gateway "$(dirname "$RAINBOW")" --set "connect_url=$BE_URL/connect/"
  run_connect rainbow-with-connect-hook "$GW_URL" "$GW_PID"
  stop_gateway
  if start_nchan; then
    run_connect nchan "ws://127.0.0.1:$NCHAN_PORT/sub/bench"
    stop_nchan
  else
    tag_json '{"bench":"connect"}' target=nchan "error=nginx+nchan could not be started" | tee -a "$results"
  fi
  if start_pushpin; then
    run_connect pushpin "ws://127.0.0.1:$PUSHPIN_PORT/bench"
    stop_pushpin
  else
    tag_json '{"bench":"connect"}' target=pushpin "error=pushpin could not be started" | tee -a "$results"
  fi
fi
python3 bench/table.py "$results" >&2
