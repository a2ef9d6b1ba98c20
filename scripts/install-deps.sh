#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine. Idempotent:
# each step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

have cargo || { echo "cargo (Rust) is required: see https://rustup.rs" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt 2>/dev/null || true
