#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine. Idempotent:
# each step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

have cargo || { echo "cargo (Rust) is required: see https://rustup.rs" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt 2>/dev/null || true

# The SDK suites: Node >= 20 with npm (clients/js), Python >= 3.9 with venv (clients/python).
have node && have npm || { echo "node and npm are required for clients/js tests (Debian: apt-get install nodejs npm)" >&2; exit 1; }
have python3 || { echo "python3 is required for clients/python tests and the demo backend" >&2; exit 1; }
python3 -c "import venv" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }

# The browser test (clients/js/browser): Chromium from apt, only when missing.
[[ -x /usr/bin/chromium ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The cluster tests (crates/rainbow-gateway/tests/gateway/cluster.rs) start
# their own redis-server on a free loopback port; Debian's package, only when
# missing. Its service is not needed (and may not start in a container).
have redis-server || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
