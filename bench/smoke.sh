#!/usr/bin/env bash
# A quick end-to-end check of the gateway and the bench, for CI (< 60 s once
# built): 200 idle connections held 2 s, then 200 handshakes at 1000/s; fails
# unless every connection opened and stayed open.
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
    BIN=target/debug
    ;;
  release)
    BIN=target/release
    if [[ ! -x "$BIN/rainbow" || ! -x "$BIN/rainbow-bench" ]]; then
      cargo build --release -p rainbow-gateway -p rainbow-bench >&2
    fi
    ;;
  *)
    echo "PROFILE must be debug or release" >&2
    exit 2
    ;;
esac

start_gateway "$BIN"
failures=0

check() {
  local name=$1 json=$2
  shift 2
  echo "$json"
  for field in "$@"; do
    local value
    value=$(json_field "$json" "$field")
    if [[ "$value" != 0 ]]; then
      echo "smoke: $name: $field = ${value:-missing}, expected 0" >&2
      failures=$((failures + 1))
    fi
  done
}

idle=$(timeout 30 "$BIN/rainbow-bench" idle --url "$GW_URL" --connections 200 --hold 2 --pid "$GW_PID" --no-progress)
check idle "$idle" connections_failed connections_dropped
connect=$(timeout 20 "$BIN/rainbow-bench" connect --url "$GW_URL" --connections 200 --rate 1000 --pid "$GW_PID" --no-progress)
check connect "$connect" connections_failed
stop_gateway

if [[ $failures -ne 0 ]]; then
  echo "smoke: FAILED ($failures checks)" >&2
  exit 1
fi
echo "smoke: ok" >&2
