#!/usr/bin/env bash
# The whole test suite, set-up included: a virtualenv, pinned installs, lint, types,
# then pytest (which starts its own S3 server, moto, on a free loopback port).
# PYTHON=python3.10 VENV=.venv-py310 bash tests/run.sh runs it on another Python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -e ".[test,dev]"
"$venv/bin/python" -m ruff check asgi_litestream tests examples
"$venv/bin/python" -m mypy
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
