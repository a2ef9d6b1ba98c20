#!/usr/bin/env bash
# Creates .venv (if missing), installs rainbow-sdk with its test extras, runs pytest.
# Extra arguments go to pytest, e.g. ./test.sh -m "not integration" or ./test.sh -k qos.
# Integration tests use $RAINBOW_BIN, or build the gateway with cargo from the workspace root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import sys" >/dev/null 2>&1; then
    rm -rf .venv
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi

# Reinstall only when the package metadata changed (the install is editable).
stamp=.venv/.rainbow-sdk-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import rainbow, pytest" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet -e '.[test,django,flask,fastapi]'
    echo "$want" > "$stamp"
fi

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"
