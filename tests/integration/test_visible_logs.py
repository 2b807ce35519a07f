"""The lifecycle is visible under a bare server: with no logging configured, one line
each for start, fresh start, crash and restart, final flush and stop; and never twice
when the app does configure logging. Real servers, real Litestream."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.servers import start_server

pytestmark = pytest.mark.integration

LIFECYCLE = {
    "no backup of": 1,          # fresh start (a restore says "restored ... from")
    "running (pid": 2,          # started, and again after the crash
    "exited unexpectedly": 1,   # the crash
    "final flush complete": 1,
    "stopped (pid": 1,
}


def run_one_life(kind: str, tmp_path: Path, litestream_bin: Path, *, bare: bool) -> str:
    """Start, write, SIGKILL Litestream once, wait for the restart, SIGTERM; the output."""
    env = {
        "NOTES_DATABASE": str(tmp_path / "app.db"),
        "NOTES_REPLICA_URL": f"file://{tmp_path}/replica",
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        **({"NOTES_BARE_LOGGING": "1"} if bare else {}),
    }
    server = start_server(kind, tmp_path, env, app="tests.integration.apps.starlette_app:app")
    try:
        server.post_note("one")
        os.kill(server.get("/_litestream/status").json()["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while server.get("/_litestream/status").json()["restarts"] < 1:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        while server.get("/_litestream/status").status_code != 200:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        server.post_note("two")
        assert server.stop() in (0, -signal.SIGTERM)
    finally:
        server.stop(signal.SIGKILL)
    return server.output()


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "granian"])
def test_bare_server_shows_each_lifecycle_line_once(
    kind: str, tmp_path: Path, litestream_bin: Path
) -> None:
    """No logging configured by the app: the lifecycle lines come out through the
    server's own logger, once each; Litestream's INFO chatter stays out."""
    output = run_one_life(kind, tmp_path, litestream_bin, bare=True)
    for line, times in LIFECYCLE.items():
        assert output.count(line) == times, (line, output)
    assert "compaction monitor" not in output


def test_an_app_that_configures_logging_sees_each_line_once(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """basicConfig in the app: its handlers show our lines, and nothing is doubled."""
    output = run_one_life("uvicorn", tmp_path, litestream_bin, bare=False)
    for line, times in LIFECYCLE.items():
        assert output.count(line) == times, (line, output)
    assert "compaction monitor" in output  # the app asked for INFO: it gets Litestream's
