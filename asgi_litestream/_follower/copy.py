"""The follower's copy on disk: publishing a fresh one, its position file, and
reading it (:func:`connect_readonly`).

Readers of the copy (measured with Litestream 0.5.17; ``replica.go`` ``applyLTXFile``):
Litestream writes each update into the copy under SQLite's own EXCLUSIVE lock, so a
read transaction never sees a torn page; a reader starting meanwhile waits (busy_timeout).
Keep read transactions short: one left open holds every update back, and readers in
other processes then get "database is locked". The first restore leaves the header in
WAL mode, where every open connection holds a shared lock and follow blocks for good
(SIGTERM cannot stop it then): the follower switches it to rollback mode before it
publishes the copy. The change counter moves only when an update touches page 1, so a
connection keeping its page cache reads stale pages: use :func:`connect_readonly`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio

_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def connect_readonly(path: str | os.PathLike[str], *, timeout: float = 5.0,
                     check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to a follower's copy that refuses writes ("attempt to write a
    readonly database") and keeps no page cache between reads, so that it sees
    every update Litestream applies (see the module docstring). ``timeout`` is the
    busy timeout: a read waits while Litestream applies an update."""
    uri = f"{Path(path).absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout,
                           check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA cache_size = 0")
        conn.execute("PRAGMA mmap_size = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def _txid_path(copy: Path) -> Path:
    return Path(f"{copy}-txid")  # Litestream's TXIDPath()


def _publish(temp: Path, path: Path) -> None:
    """Put a freshly restored copy (still followed under ``temp``) in place. Never
    open()s ``path``: closing any descriptor of a file drops the SQLite locks the app's
    connections hold on it (POSIX locks belong to the process)."""
    with open(temp, "r+b") as file:
        file.seek(18)
        if file.read(2) == b"\x02\x02":  # WAL; Litestream writes 1, 1 too, on page 1
            file.seek(18)
            file.write(b"\x01\x01")
            file.flush()
            os.fsync(file.fileno())
    # The old copy's position first: a crash in between must not pair it with the new
    # file (a resume would then replay old updates over newer pages).
    _txid_path(path).unlink(missing_ok=True)
    for suffix in _SQLITE_SIDECARS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _remove_restore_files(temp: Path) -> None:
    for name in (str(temp), f"{temp}.tmp", f"{temp}-txid", f"{temp}-txid.tmp",
                 *(f"{temp}{suffix}" for suffix in _SQLITE_SIDECARS)):
        Path(name).unlink(missing_ok=True)


def _replace_if_exists(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_HEADER_PROBE = ("import sys\nwith open(sys.argv[1], 'rb') as f:\n    f.seek(18)\n"
                 "    sys.stdout.write(f.read(2).hex())\n")


async def _in_wal_mode(path: Path) -> bool:
    """The copy's header says WAL (bytes 18-19 are 2). Read in a child process: opening
    the file here could drop the app's SQLite locks on it (see _publish)."""
    result = await anyio.run_process([sys.executable, "-I", "-S", "-c", _HEADER_PROBE,
                                      str(path)], check=False, stdin=subprocess.DEVNULL)
    return result.returncode == 0 and result.stdout.strip() == b"0202"
