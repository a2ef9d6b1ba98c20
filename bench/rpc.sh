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

ensure_release
start_backend
hooks=()
if [[ $HOOKS == 1 ]]; then
  hooks=(--set "connect_url=$BE_URL/connect/" --set "close_url=$BE_URL/close/")
fi
start_gateway "$(dirname "$RAINBOW")" "${hooks[@]}" \
  --set "forward_url=$BE_URL/message/{message_type}/" --set max_message_rate=0
results="$BENCH_TMP/rpc.jsonl"
for clients in $C; do
  wait_quiet
  busy=$MACHINE_BUSY
  line=$(bench rpc --url "$GW_URL" --clients "$clients" --window "$WINDOW" --duration "$SECS" --warmup "$WARMUP" \
    --payload-size "$PAYLOAD" --direct-url "$BE_URL/message/1/" --pid "$GW_PID" --backend-pid "$BE_PID" --no-progress)
  tag_json "$line" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)" | tee -a "$results"
done
python3 bench/table.py "$results" >&2
