#!/usr/bin/env bash
# The README's quick start in one go: builds the gateway, starts the quick-start backend
# (examples/quickstart/backend.py) and the gateway with the original
# rainbow.ini, sends one message through them with the CLI client, then keeps
# serving until Ctrl-C. Nothing external is needed.
#   PROFILE=debug scripts/quickstart.sh      faster build
#   DEMO_ONESHOT=1 scripts/quickstart.sh     exit after the round trip (used by tests)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build $flag -p rainbow-gateway --bins
bin=target/$profile

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 examples/quickstart/backend.py &
pids+=($!)
RUST_LOG=${RUST_LOG:-info} "$bin/rainbow-server" -f examples/quickstart/rainbow.ini -p "${PORT:-1984}" &
pids+=($!)

for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:${PORT:-1984}/hello/', timeout=1)" 2>/dev/null &&
     python3 -c "import socket; socket.create_connection(('127.0.0.1', 8000), 1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

echo
echo "== a client sends {\"hello\": \"rainbow\"} as type 1 at qos 1; the backend's reply:"
"$bin/rainbow" client "ws://127.0.0.1:${PORT:-1984}/connect/" send 1 '{"hello": "rainbow"}' --qos 1
echo
echo "Gateway: ws://127.0.0.1:${PORT:-1984}/connect/   node page: http://127.0.0.1:${PORT:-1984}/serverinfo/"
echo "Try:  $bin/rainbow client ws://127.0.0.1:${PORT:-1984}/connect/ listen"
[ -n "${DEMO_ONESHOT:-}" ] && exit 0
echo "Serving until Ctrl-C."
wait
