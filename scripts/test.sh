#!/usr/bin/env bash
# Runs the whole test suite: the README's test command, and what CI runs.
# Installs what the tests need (idempotently) before running them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust tests (unit, property, integration)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc

echo "== JavaScript SDK (node --test)"
clients/js/test.sh

echo "== Python SDK (pytest, against the real gateway binary)"
cargo build -p rainbow-gateway --bins --locked
RAINBOW_BIN="$PWD/target/debug/rainbow-server" clients/python/test.sh -q

echo "== chat demo in headless Chromium (the real gateway binary, through a cuttable proxy)"
RAINBOW_BIN="$PWD/target/debug/rainbow" clients/js/browser/test.sh

echo "== the README's quick start (one round trip through gateway and the stdlib Python backend)"
demo_out=$(PROFILE=debug DEMO_ONESHOT=1 PORT=19841 RUST_LOG=warn scripts/quickstart.sh 2>&1)
if ! grep -q '{"echo": "{\\"hello\\": \\"rainbow\\"}"}' <<<"$demo_out"; then
  echo "scripts/quickstart.sh did not complete a round trip:"; echo "$demo_out"; exit 1
fi
echo "quick start round trip ok"

echo "== benchmark smoke run (200 idle connections, 200 handshakes; figures are in docs/PERFORMANCE.md)"
bench/smoke.sh
