#!/usr/bin/env bash
# Request/reply through an echo worker vs through an HTTP webhook backend:
# the same gateway, the same closed-loop clients (rainbow-worker's rpc_bench
# example), once with worker_route=webhook and a keep-alive HTTP echo
# backend, once with worker_route=workers and the echo_worker example.
# Prints one JSON line per run.
#
#   PROFILE=release CONNS=50 SECS=10 QOS=1 scripts/worker-rpc-bench.sh
#   (SKIP_BUILD=1 uses the binaries already built)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
CONNS=${CONNS:-50}
SECS=${SECS:-10}
QOS=${QOS:-1}
CREDITS=${CREDITS:-256}
PORT=${PORT:-19871}
HOOK_PORT=${HOOK_PORT:-19872}
BIN=target/$PROFILE
flag=(); [[ $PROFILE == release ]] && flag=(--release)
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build "${flag[@]}" -q -p rainbow-gateway --bins
  cargo build "${flag[@]}" -q -p rainbow-worker --example echo_worker --example rpc_bench
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_up() {
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/hello/" >/dev/null && return 0; sleep 0.1; done
  echo "gateway did not start" >&2; exit 1
}

gateway() {
  # max_message_rate=0: a closed-loop client may exceed the default 1000/s.
  RUST_LOG=warn RAINBOW_SECURITY_TOKEN=bench "$BIN/rainbow" serve -p "$PORT" --bind 127.0.0.1 \
    --set max_message_rate=0 "$@" &
  gw_pid=$!; pids+=("$gw_pid"); wait_up
}

stop_gateway() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; }

measure() {
  "$BIN/examples/rpc_bench" run --url "ws://127.0.0.1:$PORT/connect/" --connections "$CONNS" --seconds "$SECS" --qos "$QOS" \
    | sed "s/^{/{\"backend\": \"$1\", /"
}

# 1. webhook
"$BIN/examples/rpc_bench" webhook --port "$HOOK_PORT" 2>/dev/null &
pids+=($!)
gateway --set "forward_url=http://127.0.0.1:$HOOK_PORT/m/" --set worker_route=webhook
measure webhook
stop_gateway

# 2. worker
gateway --set worker_route=workers
RUST_LOG=warn "$BIN/examples/echo_worker" --url "ws://127.0.0.1:$PORT/worker/" --token bench --credits "$CREDITS" &
pids+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/serverinfo/?cluster=1" | grep -q '"name":"echo"' && break; sleep 0.1; done
measure worker
stop_gateway
