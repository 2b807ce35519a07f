#!/usr/bin/env bash
# Run the example notes app with Litestream beside it (set-up included).
# Default: replicates to examples/fastapi_app/data/replica (no cloud account).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e ".[bin,example]"
echo "notes app: http://127.0.0.1:${PORT:-8000}/notes  status: /_litestream/status"
exec .venv/bin/python -m uvicorn examples.fastapi_app.app:app \
    --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
