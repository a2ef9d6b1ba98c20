#!/usr/bin/env bash
# Idle-connection memory of the gateway core (no backend, no hooks).
#
#   N=10000 HOLD=20 bench/idle-memory.sh [extra rainbow-bench idle flags]
#
# Builds the release binaries if they are missing (REBUILD=1 rebuilds them),
# starts target/release/rainbow on a free loopback port, runs
# `rainbow-bench idle` against it and prints the JSON result line on stdout.
# It records nothing by itself: copy the figures into docs/PERFORMANCE.md.
#
# Environment: N (connections, default 10000), HOLD (seconds, default 20),
# RATE (connections per second, default 2000), SOURCES (client source
# addresses, default 127.0.0.2-127.0.0.40), PORT (default: a free one),
# RUST_LOG (gateway log filter, default warn).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-10000}
HOLD=${HOLD:-20}
RATE=${RATE:-2000}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.40}
BIN=target/release

if [[ "${REBUILD:-0}" == 1 || ! -x "$BIN/rainbow" || ! -x "$BIN/rainbow-bench" ]]; then
  echo "building release binaries (slow on this machine)..." >&2
  cargo build --release -p rainbow-gateway -p rainbow-bench >&2
fi

limit=$(ulimit -n)
if [[ "$limit" != unlimited && $((N + 200)) -gt "$limit" ]]; then
  echo "N=$N needs more than the $limit open files one gateway process may hold here" >&2
  exit 2
fi

start_gateway "$BIN"
result=$("$BIN/rainbow-bench" idle \
  --url "$GW_URL" \
  --connections "$N" \
  --hold "$HOLD" \
  --rate "$RATE" \
  --sources "$SOURCES" \
  --pid "$GW_PID" \
  "$@")
stop_gateway
echo "$result"
