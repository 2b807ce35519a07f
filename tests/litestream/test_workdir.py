"""The private folder for config and socket: made locked, removed, swept when stale."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from asgi_litestream._litestream.workdir import private_workdir, remove_stale_workdirs


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_private_and_removed(tmpdir_env: Path) -> None:
    """0700, named als-*, and gone (twice over, harmlessly) after remove()."""
    workdir = private_workdir()
    assert workdir.path.parent == tmpdir_env and workdir.path.name.startswith("als-")
    assert stat.S_IMODE(workdir.path.stat().st_mode) == 0o700
    workdir.remove()
    workdir.remove()
    assert list(tmpdir_env.iterdir()) == []


def test_a_start_sweeps_folders_left_by_killed_processes(tmpdir_env: Path) -> None:
    """A folder whose owner is gone (its lock free) is removed by the next start;
    one whose owner still runs (lock held) is kept."""
    in_use = private_workdir()
    left = tmpdir_env / "als-leftover"
    left.mkdir(mode=0o700)
    (left / "owner.lock").touch()
    (left / "litestream.yml").write_text("dbs: []\n")
    other = tmpdir_env / "unrelated"
    other.mkdir()
    fresh = private_workdir()
    assert sorted(p.name for p in tmpdir_env.iterdir()) == sorted(
        [in_use.path.name, fresh.path.name, "unrelated"])
    in_use.remove()
    fresh.remove()


def test_the_sweep_never_takes_a_folder_still_locked(tmpdir_env: Path) -> None:
    """A lock held through another open file (another process, another pid
    namespace) keeps the folder."""
    held = tmpdir_env / "als-held"
    held.mkdir()
    fd = os.open(held / "owner.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert remove_stale_workdirs(tmpdir_env) == []
        assert held.exists()
    finally:
        os.close(fd)
    assert remove_stale_workdirs(tmpdir_env) == [held]
