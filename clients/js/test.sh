#!/usr/bin/env bash
# Installs the dev dependencies (only `ws`, for the test gateway) and runs the
# JavaScript client's tests with node's built-in runner. Idempotent; needs
# Node >= 20 and npm, nothing else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "rainbow-client tests need Node >= 20 (found $(node --version))" >&2
  exit 1
fi

if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# The shell expands the list (helpers.js is not a test file); this works the
# same on Node 20, where --test takes paths, and on later versions (globs).
node --test test/*.test.js
