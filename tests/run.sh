#!/usr/bin/env bash
# The whole test suite, set-up included: a virtualenv, pinned installs, lint, types, the
# import layers, the documentation site (mkdocs build --strict), the sdist and wheel
# (python -m build, twine check), then pytest (which starts its own S3 servers, moto and
# s3rver, on free loopback ports).
#
# Outside the virtualenv it also installs, when it can: s3rver with npm (into
# tests/.s3rver/, when node and npm are there) and Debian's chromium with apt-get (as root,
# or with sudo -n), for the second-S3 and the browser tests. ASGI_LITESTREAM_TEST_NO_SYSTEM=1
# installs neither: those tests are then skipped, as they are when the tool is missing.
#
# PYTHON=python3.10 VENV=.venv-py310 bash tests/run.sh runs it on another Python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -e ".[test,dev,docs]"
system=1
[ "${ASGI_LITESTREAM_TEST_NO_SYSTEM:-}" = "1" ] && system=0
# s3rver, a second S3 implementation (Node.js); its tests are skipped without node.
s3rver_version=3.7.1
if [ "$system" = 1 ] && command -v npm >/dev/null && command -v node >/dev/null; then
    installed=$(node -p "require('./tests/.s3rver/node_modules/s3rver/package.json').version" \
        2>/dev/null || true)
    if [ "$installed" != "$s3rver_version" ]; then
        npm install --prefix tests/.s3rver --save-exact --no-audit --no-fund --silent \
            "s3rver@$s3rver_version" \
            || echo "s3rver could not be installed: its tests will be skipped" >&2
    fi
fi
# Chromium (Debian's package) for the status page's browser tests; skipped without it.
if [ "$system" = 1 ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
    [ "$(id -u)" -eq 0 ] || as_root=(sudo -n "${as_root[@]}")
    { "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
        || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 \
             && "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1; }; } \
        || echo "chromium could not be installed: the browser tests will be skipped" >&2
fi
"$venv/bin/python" -m ruff check asgi_litestream tests examples docs
"$venv/bin/python" -m mypy
# Imports only go down (the layers in pyproject.toml [tool.importlinter]).
"$venv/bin/lint-imports"
# The documentation site: a broken link, anchor, include or page fails (site/ is ignored).
NO_MKDOCS_2_WARNING=1 "$venv/bin/python" -m mkdocs build --strict --quiet --site-dir site
# The release: sdist and wheel into a temporary folder, their metadata checked; the
# tests (tests/test_release.py) read the wheel from ASGI_LITESTREAM_DIST.
dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
"$venv/bin/python" -m build --outdir "$dist" . >"$dist/build.log" 2>&1 \
    || { cat "$dist/build.log" >&2; exit 1; }
"$venv/bin/python" -m twine check --strict "$dist"/*.whl "$dist"/*.tar.gz
export ASGI_LITESTREAM_DIST="$dist"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
