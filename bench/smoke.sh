#!/usr/bin/env bash
# A quick end-to-end check of the gateway and the bench, for CI (about 20 s
# once built): 200 idle connections held 2 s, 200 handshakes at 1000/s, a
# fan-out of 20 publications to 300 subscribers (subscribed by the connect
# hook of `rainbow-bench backend`), 1 s of qos-1 round trips from 4
# clients through the forward hook, 3 s of `rainbow-bench hostile` (16
# connections, every attack, 1 s each, gentle rates), and the same small
# fan-out against `rainbow-bench floor`. Fails unless every connection
# opened and stayed open, no delivery was lost, every round trip was
# answered and the hostile run reported every attack. It does not check
# what the gateway does about the hostile clients (see bench/soak.sh).
#
# Uses debug binaries (`cargo build`, cheap when already built); PROFILE=release
# uses target/release instead, building it only if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

PROFILE=${PROFILE:-debug}
case "$PROFILE" in
  debug)
    cargo build -p rainbow-gateway -p rainbow-bench >&2
    BIN=${CARGO_TARGET_DIR:-target}/debug
    ;;
  release)
    BIN=${CARGO_TARGET_DIR:-target}/release
    if [[ ! -x "$BIN/rainbow" || ! -x "$BIN/rainbow-bench" ]]; then
      cargo build --release -p rainbow-gateway -p rainbow-bench >&2
    fi
    ;;
  *)
    echo "PROFILE must be debug or release" >&2
    exit 2
    ;;
esac
set_bins "$BIN"

failures=0

# check NAME JSON EXPR...: each EXPR is a Python expression over the result
# `r` that must be true.
check() {
  local name=$1 json=$2
  shift 2
  echo "$json"
  local failed
  failed=$(python3 - "$json" "$@" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
for expr in sys.argv[2:]:
    try:
        ok = eval(expr, {}, {"r": r})
    except Exception as e:  # a missing field is a failure, with its name
        ok, expr = False, f"{expr} ({e!r})"
    if not ok:
        print(expr)
PY
)
  if [[ -n "$failed" ]]; then
    while IFS= read -r expr; do
      echo "smoke: $name: expected $expr" >&2
      failures=$((failures + 1))
    done <<<"$failed"
  fi
}

start_gateway "$BIN"
idle=$(timeout 30 "$BENCH_BIN" idle --url "$GW_URL" --connections 200 --hold 2 --pid "$GW_PID" --no-progress)
check idle "$idle" 'r["connections_failed"] == 0' 'r["connections_dropped"] == 0' 'r["connections_held"] == 200'
connect=$(timeout 20 "$BENCH_BIN" connect --url "$GW_URL" --connections 200 --rate 1000 --pid "$GW_PID" --no-progress)
check connect "$connect" 'r["connections_failed"] == 0'
stop_gateway

start_backend
start_gateway "$BIN" --set "connect_url=$BE_URL/connect/" --set "close_url=$BE_URL/close/" \
  --set "forward_url=$BE_URL/message/{message_type}/" --set max_message_rate=0
fanout=$(timeout 40 "$BENCH_BIN" fanout --url "$GW_URL" --connections 300 --publish-rate 20 --duration 1 \
  --drain 5 --pause 0.2 --pid "$GW_PID" --no-progress)
check fanout "$fanout" 'r["connections_failed"] == 0' 'r["lost"] == 0' 'r["steps"][0]["published"] == 20' \
  'r["steps"][0]["publish_failed"] == 0' 'r["steps"][0]["deliveries"] == 20 * 300' 'r["duplicates"] == 0'
rpc=$(timeout 30 "$BENCH_BIN" rpc --url "$GW_URL" --clients 4 --warmup 0.2 --duration 1 \
  --direct-url "$BE_URL/message/1/" --pid "$GW_PID" --no-progress)
check rpc "$rpc" 'r["connections_failed"] == 0' 'r["gateway"]["failed"] == 0' 'r["gateway"]["round_trips"] >= 200' \
  'r["direct"]["failed"] == 0' 'r["direct"]["round_trips"] >= 200'
hostile=$(timeout 40 "$BENCH_BIN" hostile --url "$GW_URL" --connections 16 --attack-secs 1 --pause 0.2 --duration 3 \
  --dup-payload 4096 --dup-rate 50 --rel-rate 500 --ping-rate 100 --pid "$GW_PID" --no-progress)
check hostile "$hostile" 'r["connections_started"] == 16' \
  'sorted(r["per_attack"]) == sorted(["silent", "slowloris", "stalled-body", "stalled-body-signed", "dup-flood", "rel-flood", "ping-flood", "big-header"])' \
  'all(a["attempts"] >= 2 and a["not_started"] == 0 for a in r["per_attack"].values())' \
  'sum(a["finished"] for a in r["per_attack"].values()) >= 8' 'r["gateway_rss_max_kib"] > 0'
stop_gateway
stop_backend

# The floor server (the machine's own limit, see docs/PERFORMANCE.md).
start_floor
floor=$(timeout 40 "$BENCH_BIN" fanout --target floor --url "ws://127.0.0.1:$FLOOR_PORT/sub/{channel}" --connections 300 \
  --publish-rate 20 --duration 1 --drain 5 --pause 0.2 --pid "$FLOOR_PID" --no-progress)
check floor "$floor" 'r["connections_failed"] == 0' 'r["lost"] == 0' 'r["steps"][0]["deliveries"] == 20 * 300'
stop_floor

if [[ $failures -ne 0 ]]; then
  echo "smoke: FAILED ($failures checks)" >&2
  exit 1
fi
echo "smoke: ok" >&2
