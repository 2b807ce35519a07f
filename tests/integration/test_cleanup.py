"""Nothing left behind: the private folder (config file, control socket) goes with
every stop, and a start sweeps what a killed server left. Real uvicorn, real Litestream."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import litestreams_replicating
from tests.integration.servers import start_server

pytestmark = pytest.mark.integration


def env_for(tmp_path: Path, litestream_bin: Path, tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(exist_ok=True)
    return {
        "ASGI_LITESTREAM_DATABASE": str(tmp_path / "app.db"),
        "ASGI_LITESTREAM_REPLICA_URL": f"file://{tmp_path}/replica",
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        "TMPDIR": str(tmpdir),
    }


def private_folders(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if "als-" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_graceful_stop_removes_the_private_folder(
    sig: signal.Signals, tmp_path: Path, litestream_bin: Path
) -> None:
    """uvicorn with one worker re-raises the signal once shut down: the folder must be
    gone by then, flush done."""
    tmpdir = tmp_path / "tmp"
    server = start_server("uvicorn", tmp_path, env_for(tmp_path, litestream_bin, tmpdir))
    assert len(private_folders(tmpdir)) == 1
    server.post_note("kept")
    server.stop(sig)
    assert "final flush complete" in server.output(), server.output()
    assert private_folders(tmpdir) == []


def test_a_start_removes_what_a_killed_server_left(tmp_path: Path, litestream_bin: Path) -> None:
    """SIGKILL leaves the folder (socket and config) behind; the next start removes it
    and runs with a fresh one."""
    tmpdir = tmp_path / "tmp"
    env = env_for(tmp_path, litestream_bin, tmpdir)
    first = start_server("uvicorn", tmp_path, env)
    [left] = private_folders(tmpdir)
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10  # the orphan Litestream gets SIGTERM and exits
    while litestreams_replicating(tmp_path / "app.db") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmpdir / left / "litestream.yml").exists()
    second = start_server("uvicorn", tmp_path, env)
    try:
        assert left not in private_folders(tmpdir)
        assert len(private_folders(tmpdir)) == 1
    finally:
        second.stop()
    assert private_folders(tmpdir) == []
