#!/usr/bin/env bash
# The benchmark suite in one command, set-up included: a virtualenv, the test
# dependencies (Litestream, uvicorn, moto), wrk from Debian's packages when missing,
# then `python -m bench` with this script's arguments, e.g.
#   bash bench/run.sh --markdown BENCHMARKS.md     # the published figures
#   bash bench/run.sh --quick --only startup       # a smoke run of one measure
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)..." >&2
    { apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }; } \
        >/dev/null 2>&1 || echo "could not install wrk: over-the-wire figures are skipped" >&2
fi
export BENCH_COMMAND="bash bench/run.sh${*:+ $*}"
exec .venv/bin/python -m bench "$@"
