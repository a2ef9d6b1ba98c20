#!/usr/bin/env bash
# Fan-out: Rainbow vs nginx+Nchan vs Pushpin, one after the other in the same
# run, on the same machine, with the same load generator.
#
#   N=19000 bench/fanout.sh > fanout.jsonl      # JSON lines on stdout, table on stderr
#
# For each server: N subscribers on one channel, then
#   1. saturation: offered deliveries/s from START, x FACTOR per step of
#      STEP_SECS seconds, until a step lags (see `rainbow-bench fanout --help`);
#   2. latency: a fresh set of N subscribers at FIXED offered deliveries/s for
#      FIXED_SECS seconds.
# Each run has a fresh server of its own (started before, stopped after).
#
# TARGETS may add `floor`: `rainbow-bench floor`, a server that does nothing
# but one send(2) per delivery, which shows the least any server could need
# on this machine with this load generator.
#
# Environment: N (19000), TARGETS ("rainbow nchan pushpin"), ROUNDS (1: how
# many times the whole list is measured, interleaved), START (50000; Pushpin:
# PUSHPIN_START, 5000, its capacity here is near 10,000), FACTOR (1.25),
# MAX_STEPS (20), STEP_SECS (10), FIXED (100000), FIXED_SECS (20),
# QOS (0), PAYLOAD (64 bytes), RATE (subscriber connections per second, 2000;
# Pushpin: PUSHPIN_RATE, 500, as its WebSocket-over-HTTP opening answers 502
# to part of the handshakes at 2000/s),
# LAG_MS (2000: a step whose p99 exceeds 2 s lags), MODES ("saturation fixed":
# which of the two runs), RAINBOW_BIN / BENCH_BIN (binaries; default target/release,
# built if missing), NGINX_WORKERS (default: cores). Needs bench/install-peers.sh
# for the peers; a peer that is not installed is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-19000}
TARGETS=${TARGETS:-rainbow nchan pushpin}
ROUNDS=${ROUNDS:-1}
START=${START:-50000}
PUSHPIN_START=${PUSHPIN_START:-5000}
FACTOR=${FACTOR:-1.25}
MAX_STEPS=${MAX_STEPS:-20}
STEP_SECS=${STEP_SECS:-10}
FIXED=${FIXED:-100000}
FIXED_SECS=${FIXED_SECS:-20}
QOS=${QOS:-0}
PAYLOAD=${PAYLOAD:-64}
RATE=${RATE:-2000}
PUSHPIN_RATE=${PUSHPIN_RATE:-500}
LAG_MS=${LAG_MS:-2000}
MODES=${MODES:-saturation fixed}

ensure_release
start_backend
results="$BENCH_TMP/fanout.jsonl"
: >"$results"

# run_fanout TARGET URL PIDS MODE [extra args]: one rainbow-bench fanout run,
# its JSON line (tagged with the mode, the round and the machine's busy figure
# before it) to stdout and the results file.
run_fanout() {
  local target=$1 url=$2 pids=$3 mode=$4 rate=$RATE
  shift 4
  [[ $target == pushpin ]] && rate=$PUSHPIN_RATE
  wait_quiet
  local busy=$MACHINE_BUSY
  local line
  # shellcheck disable=SC2046 # word splitting of the --pid list is intended
  if ! line=$(bench fanout --target "$target" --url "$url" -n "$N" --rate "$rate" \
    --qos "$QOS" --payload-size "$PAYLOAD" --lag-ms "$LAG_MS" $(pid_args $pids) --no-progress "$@"); then
    line=$(tag_json '{"bench":"fanout"}' "target=$target" "error=run failed (see stderr)")
  fi
  line=$(tag_json "$line" "mode=$mode" "round=$round" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)")
  echo "$line" | tee -a "$results"
}

# start_target TARGET: starts that server; sets URL, PIDS and EXTRA (more
# fanout arguments). Returns non-zero if it cannot be started.
start_target() {
  EXTRA=()
  case $1 in
    rainbow)
      start_gateway "$(dirname "$RAINBOW")" --set "connect_url=$BE_URL/connect/" || return 1
      URL=$GW_URL PIDS=$GW_PID
      ;;
    nchan)
      start_nchan || return 1
      URL="ws://127.0.0.1:$NCHAN_PORT/sub/{channel}" PIDS=$NCHAN_PIDS
      ;;
    floor)
      start_floor || return 1
      URL="ws://127.0.0.1:$FLOOR_PORT/sub/{channel}" PIDS=$FLOOR_PID
      ;;
    pushpin)
      start_pushpin || return 1
      URL="ws://127.0.0.1:$PUSHPIN_PORT/{channel}" PIDS=$PUSHPIN_PIDS
      EXTRA=(--publish-url "$PUSHPIN_PUBLISH")
      ;;
    *)
      echo "unknown target $1" >&2
      exit 2
      ;;
  esac
}

stop_target() {
  case $1 in
    rainbow) stop_gateway ;;
    nchan) stop_nchan ;;
    floor) stop_floor ;;
    pushpin) stop_pushpin ;;
  esac
}

# measure TARGET: the saturation search and the fixed-rate run, each on a
# freshly started server (a server still working off a lagging step's
# backlog would handicap the next run).
measure() {
  local target=$1 start=$START
  [[ $target == pushpin ]] && start=$PUSHPIN_START
  local mode
  for mode in $MODES; do
    if ! start_target "$target"; then
      tag_json '{"bench":"fanout"}' "target=$target" "mode=$mode" "round=$round" "error=$target could not be started" | tee -a "$results"
      stop_target "$target"
      continue
    fi
    if [[ $mode == saturation ]]; then
      run_fanout "$target" "$URL" "$PIDS" saturation --find-saturation --deliveries-per-sec "$start" \
        --step-factor "$FACTOR" --max-steps "$MAX_STEPS" --duration "$STEP_SECS" "${EXTRA[@]}"
    else
      run_fanout "$target" "$URL" "$PIDS" fixed --deliveries-per-sec "$FIXED" --duration "$FIXED_SECS" "${EXTRA[@]}"
    fi
    stop_target "$target"
  done
}

for round in $(seq "$ROUNDS"); do
  for target in $TARGETS; do
    measure "$target"
  done
done

python3 bench/table.py "$results" >&2
