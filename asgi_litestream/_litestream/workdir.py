"""A private place for Litestream's config file and control socket.

Each folder is ``als-*`` in the temporary directory, 0700, and holds a lock file that
its owner keeps ``flock``-ed while it runs. A process killed outright (SIGKILL, OOM)
cannot remove its folder; the next start removes every such folder whose lock is
free, whatever pid namespace it came from, and never one still in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._config.settings import Settings

# Unix socket paths are capped at 108 bytes; keep ours well inside that.
_MAX_SOCKET_PATH = 100
_PREFIX = "als-"
CONFIG_NAME = "litestream.yml"
SOCKET_NAME = "ctl.sock"
_LOCK_NAME = "owner.lock"


class Workdir:
    """One private folder, held (locked) until :meth:`remove`."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    def __repr__(self) -> str:
        return f"Workdir({str(self.path)!r})"

    def remove(self) -> None:
        """Delete the folder (config, socket) and release it; safe to call twice."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def private_workdir() -> Workdir:
    """A fresh 0700 folder (mkdtemp) whose socket path fits the unix limit; first
    removes the folders that killed processes left behind."""
    parent = Path(tempfile.gettempdir())
    if len(str(parent / (_PREFIX + "xxxxxxxx") / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        parent = Path("/tmp")
    remove_stale_workdirs(parent)
    # Made under a name the sweep ignores and renamed once locked: another worker's
    # sweep must never find the folder between its creation and its lock.
    while True:
        new = Path(tempfile.mkdtemp(prefix="." + _PREFIX, dir=parent))
        fd = os.open(new / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = parent / new.name[1:]
        if not path.exists():  # mkdtemp's random name: taken only by a freak chance
            os.rename(new, path)
            return Workdir(path, fd)
        os.close(fd)
        shutil.rmtree(new, ignore_errors=True)


def remove_stale_workdirs(parent: Path) -> list[Path]:
    """Remove our ``als-*`` folders whose owner is gone (lock free); return them."""
    removed = []
    uid = os.getuid()
    for path in parent.glob(_PREFIX + "*"):
        try:
            if path.is_symlink() or path.stat().st_uid != uid:
                continue
            fd = os.open(path / _LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # not one of ours, or another start is removing it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its owner still runs
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_config(settings: Settings, workdir: Workdir, *,
                 metrics_addr: str | None = None) -> Path:
    """Write Litestream's config (no secret in it) as a 0600 file nobody else opened."""
    path = workdir.path / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(settings.to_yaml(socket_path=workdir.path / SOCKET_NAME,
                                    metrics_addr=metrics_addr))
    return path


def loopback_address() -> str:
    """``127.0.0.1:<a port free right now>``, for Litestream's metrics endpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def generated_config(settings: Settings) -> Iterator[tuple[Path, Workdir]]:
    """Litestream's config for one command run outside the app (restore, backups,
    verify): the file and its private folder, removed afterwards."""
    workdir = private_workdir()
    try:
        yield write_config(settings, workdir), workdir
    finally:
        workdir.remove()

