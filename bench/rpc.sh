#!/usr/bin/env bash
# Rpc overhead: qos-1 round trips through the gateway to `rainbow-bench
# backend`, then the same load straight at that backend over HTTP keep-alive.
#
#   C="1 8 32" bench/rpc.sh > rpc.jsonl      # a JSON line per C on stdout, table on stderr
#
# The gateway runs with forward_url (and connect/close hooks) pointing at the
# backend and max_message_rate=0: a closed-loop client sends far more than the
# default 1,000 messages/s per connection, which is a production safety
# limit, not what is measured here.
#
# FLOOR=1 also runs each C against `rainbow-bench floor --forward`: one HTTP
# call per message on each client's own backend connection and nothing else,
# the least any gateway could do here (each line with its own direct run).
#
# Environment: C (client counts, one run each, "1 8 32"), WINDOW (outstanding per client, 1), SECS
# (measured seconds, 10), WARMUP (2), PAYLOAD (32 bytes), HOOKS (1: connect
# and close hooks on too; 0: forward hook only), RAINBOW_BIN / BENCH_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

C=${C:-1 8 32}
WINDOW=${WINDOW:-1}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
PAYLOAD=${PAYLOAD:-32}
HOOKS=${HOOKS:-1}
FLOOR=${FLOOR:-0}

ensure_release
start_backend
hooks=()
if [[ $HOOKS == 1 ]]; then
  hooks=(--set "connect_url=$BE_URL/connect/" --set "close_url=$BE_URL/close/")
fi
start_gateway "$(dirname "$RAINBOW")" "${hooks[@]}" \
  --set "forward_url=$BE_URL/message/{message_type}/" --set max_message_rate=0
if [[ $FLOOR == 1 ]]; then start_floor --forward "$BE_URL/message/1/"; fi
results="$BENCH_TMP/rpc.jsonl"
# run_rpc SERVER URL PID CLIENTS: one `rainbow-bench rpc` and its direct baseline.
run_rpc() {
  wait_quiet
  local busy=$MACHINE_BUSY line
  line=$(bench rpc --url "$2" --clients "$4" --window "$WINDOW" --duration "$SECS" --warmup "$WARMUP" \
    --payload-size "$PAYLOAD" --direct-url "$BE_URL/message/1/" --pid "$3" --backend-pid "$BE_PID" --no-progress)
  tag_json "$line" "server=$1" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)" | tee -a "$results"
}
for clients in $C; do
  run_rpc rainbow "$GW_URL" "$GW_PID" "$clients"
  if [[ $FLOOR == 1 ]]; then run_rpc floor "ws://127.0.0.1:$FLOOR_PORT/connect/" "$FLOOR_PID" "$clients"; fi
done
python3 bench/table.py "$results" >&2
