"""One Litestream per database across worker processes.

Two Litestream processes on one database corrupt its replica, and every worker of
``uvicorn --workers N`` runs the lifespan. So each database has two lock files
beside it:

``.<db>.litestream-leader``
    ``flock(LOCK_EX)`` by the leading worker, and inherited by its Litestream child,
    so the lock is free only once *both* are gone: a standby can never start a
    second Litestream while an orphan still replicates. The file holds the leader's
    pid, its control socket and its state, for the standbys' status routes.
``.<db>.litestream-members``
    ``flock(LOCK_SH)`` by every worker while it serves. At shutdown the leader waits
    for ``LOCK_EX`` on it (every other worker has stopped writing) before its final
    flush, so a whole-server shutdown flushes once, after the last write.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import anyio

from .._config.databases import Database
from .._state import State
from .leader_info import LeaderInfo

logger = logging.getLogger("asgi_litestream")


def _boot_id() -> str | None:
    """This kernel's boot id (Linux): the same on every container of one host."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


BOOT_ID = _boot_id()

# How long a standby at shutdown looks for the leader to start stopping too.
_LEADER_STOP_GRACE = 1.0


def _lock_path(database: Path, role: str) -> Path:
    if database.is_dir():  # a folder of databases: inside it, where the app may write
        return database / f".litestream-{role}"
    return database.with_name(f".{database.name}.litestream-{role}")


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Leadership:
    """The leader and member locks of a set of databases, for one worker."""

    def __init__(self, databases: tuple[Database, ...]) -> None:
        # Sorted, so that two supervisors over overlapping sets cannot deadlock.
        self.paths = sorted(db.path for db in databases)
        self._leader_fds: list[int] = []
        self._member_fds: list[int] = []
        self._publish_failed = False

    @property
    def leading(self) -> bool:
        return bool(self._leader_fds)

    @property
    def fds(self) -> list[int]:
        """Descriptors Litestream must inherit to hold the leader lock with us."""
        return list(self._leader_fds)

    def try_lead(self) -> bool:
        """Take every database's leader lock, or none of them."""
        if not self._leader_fds:
            self._leader_fds = self._lock_all("leader", fcntl.LOCK_EX)
        return self.leading

    def publish(self, info: LeaderInfo) -> None:
        """Tell the standbys who leads and where its control socket is. Best effort:
        a full or failing disk must never stop a flush or a shutdown (the standbys
        then see stale news, and at worst wait a bounded while)."""
        data = info.encode()
        for fd in self._leader_fds:
            try:
                # Write past the old content first, then cut: a reader never sees an
                # empty file, at worst the new text followed by old bytes (invalid JSON,
                # which it reads as "no news" and asks again).
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            except OSError as exc:
                if not self._publish_failed:
                    logger.warning("cannot update %s for the other workers: %s",
                                   _lock_path(self.paths[0], "leader"), exc)
                self._publish_failed = True

    def leader_info(self) -> LeaderInfo | None:
        """What the current leader published (None if nobody has, or mid-write)."""
        try:
            text = _lock_path(self.paths[0], "leader").read_bytes()
        except OSError:
            return None
        return LeaderInfo.from_json(text)

    def resign(self) -> None:
        try:
            if self._leader_fds:
                self.publish(LeaderInfo(pid=os.getpid(), state=State.STOPPED))
        finally:
            for fd in self._leader_fds:
                os.close(fd)  # Litestream's inherited copy is gone by now
            self._leader_fds = []

    def join(self) -> bool:
        """Count this worker among those serving (shared lock on each database)."""
        if not self._member_fds:
            self._member_fds = self._lock_all("members", fcntl.LOCK_SH)
        return bool(self._member_fds)

    def _lock_all(self, role: str, operation: int) -> list[int]:
        """Every database's ``role`` lock without blocking: all of them, or none."""
        taken: list[int] = []
        for path in self.paths:
            fd = _open(_lock_path(path, role))
            if not _try_flock(fd, operation):
                os.close(fd)
                for other in taken:
                    os.close(other)
                return []
            taken.append(fd)
        return taken

    def leave(self) -> None:
        for fd in self._member_fds:
            os.close(fd)
        self._member_fds = []

    def others_gone(self) -> bool:
        """True once no other worker holds a member lock (call after leave())."""
        fds = [_open(_lock_path(path, "members")) for path in self.paths]
        try:
            return all(_try_flock(fd, fcntl.LOCK_EX) for fd in fds)
        finally:
            for fd in fds:
                os.close(fd)

    async def wait_for_others(self, limit: float) -> None:
        """At shutdown (after leave()), until the other workers have stopped writing."""
        with anyio.move_on_after(limit):
            while not self.others_gone():  # noqa: ASYNC110 - other processes' locks
                await anyio.sleep(0.02)

    async def wait_for_leader_to_flush(self, limit: float) -> None:
        """When the whole server stops, outlive the leader's flush.

        Hypercorn's master terminates every worker as soon as the first one exits;
        a standby that exits first would get the leader killed mid-flush. If the
        leader is not stopping too (only this worker is going), leave at once.
        """
        grace = time.monotonic() + _LEADER_STOP_GRACE
        with anyio.move_on_after(limit):
            while True:
                info = self.leader_info()
                if info is None:  # mid-write: look again
                    await anyio.sleep(0.02)
                    continue
                if info.state is not State.STOPPING and (
                    info.state is not State.RUNNING or time.monotonic() > grace
                ):
                    return
                await anyio.sleep(0.02)

