#!/usr/bin/env bash
# The chat demo in a real browser (headless Chromium) against the real gateway
# binary: browser/demo.e2e.test.js. Idempotent: installs Chromium (apt-get)
# and the npm dev dependencies only when they are missing, then runs the test.
#
# Needs Node >= 20 and npm, root (or sudo) for apt-get when Chromium is
# missing, and the `rainbow` binary: build it first with
#   cargo build -p rainbow-gateway --bins
# or point RAINBOW_BIN at it. Extra arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." # clients/js

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "the browser test needs Node >= 20 (found $(node --version))" >&2
  exit 1
fi

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ "$chromium" != /usr/bin/chromium ]]; then
    echo "CHROMIUM_PATH=$chromium is not an executable" >&2
    exit 1
  fi
  echo "== installing Chromium (apt-get)"
  sudo=()
  if (( EUID != 0 )); then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "Chromium is missing and installing it needs root: apt-get install chromium" >&2
      exit 1
    fi
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [[ ! -f node_modules/playwright-core/package.json ]]; then
  echo "== installing the npm dev dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

node --test "$@" browser/demo.e2e.test.js
