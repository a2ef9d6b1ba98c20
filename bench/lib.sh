# Shared helpers of the bench/ scripts: start a gateway with no backend on a
# free loopback port, wait for /hello/, stop it on exit. Source it; it sets
# GW_PID, GW_PORT, GW_URL and GW_LOG.
#
# The gateway runs with no hooks (connect_url, close_url and forward_url
# empty), so what is measured is the gateway core alone.

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/rainbow-bench.XXXXXX")
GW_PID=
GW_LOG="$BENCH_TMP/gateway.log"

bench_cleanup() {
  local status=$?
  if [[ -n "${GW_PID:-}" ]] && kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -s "$GW_LOG" ]]; then
    echo "--- last lines of the gateway log ($GW_LOG) ---" >&2
    tail -n 20 "$GW_LOG" >&2 || true
  else
    rm -rf "$BENCH_TMP"
  fi
  exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_gateway BIN_DIR [extra --set arguments...]
start_gateway() {
  local bin=$1
  shift
  GW_PORT=${PORT:-$(free_port)}
  GW_URL="ws://127.0.0.1:$GW_PORT/connect/"
  RUST_LOG=${RUST_LOG:-warn} "$bin/rainbow" serve \
    --set security_token=bench \
    --set connect_url= \
    --set close_url= \
    --set forward_url= \
    --set bind=127.0.0.1 \
    --set "http_port=$GW_PORT" \
    --set max_connections=200000 \
    "$@" >"$GW_LOG" 2>&1 &
  GW_PID=$!
  local url="http://127.0.0.1:$GW_PORT/hello/"
  for _ in $(seq 100); do
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      echo "the gateway exited during startup" >&2
      return 1
    fi
    if python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).read().strip() == b"ok" else 1)' "$url" 2>/dev/null; then
      echo "gateway pid $GW_PID listening on 127.0.0.1:$GW_PORT" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "the gateway did not answer $url within 10 s" >&2
  return 1
}

# stop_gateway: SIGTERM, then wait for it.
stop_gateway() {
  if [[ -n "${GW_PID:-}" ]]; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=
  fi
}

# json_field JSON NAME: prints one top-level field of a JSON object.
json_field() {
  python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}
