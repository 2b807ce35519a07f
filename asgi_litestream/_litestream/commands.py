"""Every `litestream` command line we run, built in one place, each wrapped so that the
child cannot outlive the app (:func:`with_parent_death`).

The replica is named through a config file and the database's path wherever there is
one; a replica URL on the command line is refused when it carries a password (argv is
world-readable in the process list).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

# Exec'd by the current interpreter when `setpriv` is missing: ask the kernel to
# SIGTERM Litestream when its parent dies, then become Litestream (same pid, so
# signals and the control socket's pid check are unchanged).
PDEATHSIG_EXEC = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) or os.getppid() != int(sys.argv[1]):
    os._exit(70)
os.execv(sys.argv[2], sys.argv[2:])
"""


def with_parent_death(command: Sequence[str]) -> list[str]:
    """``command`` wrapped on Linux so that it gets SIGTERM (Litestream then makes its own
    final sync) if the app dies without stopping it (SIGKILL, OOM). The wrapper execs the
    command: same pid. Elsewhere ``command`` unchanged (a graceful shutdown still stops
    it). The kernel signals when the spawning *thread* ends: spawn from the event loop,
    or from a thread that waits for the child (``subprocess.run``)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    setpriv = find_setpriv()
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--", *command]
    return [sys.executable, "-I", "-S", "-c", PDEATHSIG_EXEC, str(os.getpid()), *command]


@functools.cache
def find_setpriv() -> str | None:
    return shutil.which("setpriv")


def replicate_command(binary: Path, config_path: Path) -> list[str]:
    """`litestream replicate -config FILE`."""
    return with_parent_death([str(binary), "replicate", "-config", str(config_path)])


def restore_command(
    binary: Path, *, output: Path, database: Path | None = None,
    config_path: Path | None = None, replica_url: str | None = None,
    if_replica_exists: bool = False, follow: float | None = None, dry_run: bool = False,
    json: bool = False, txid: int | None = None, timestamp: str | None = None,
) -> list[str]:
    """`litestream restore` into ``output``, from ``database``'s replica as
    ``config_path`` lists it, or from ``replica_url``. ``follow``: keep following (``-f``)
    every that many seconds; ``txid`` / ``timestamp`` (RFC 3339): that point in time."""
    if txid is not None and timestamp is not None:
        raise ValueError("restore to a txid or to a timestamp, not both")
    flags = ["restore", *_config(config_path)]
    if follow is not None:
        flags += ["-f", "-follow-interval", go_duration(follow)]
    flags += [flag for flag, on in (("-if-replica-exists", if_replica_exists),
                                    ("-dry-run", dry_run), ("-json", json)) if on]
    if txid is not None:
        flags += ["-txid", f"{txid:016x}"]
    if timestamp is not None:
        flags += ["-timestamp", timestamp]
    return with_parent_death([str(binary), *flags, "-o", str(output),
                              _source(database, config_path, replica_url)])


def ltx_command(
    binary: Path, *, level: int | Literal["all"] = "all", json: bool = True,
    database: Path | None = None, config_path: Path | None = None,
    replica_url: str | None = None,
) -> list[str]:
    """`litestream ltx`: the LTX files of one replica at ``level`` (every level by
    default), as JSON by default."""
    flags = ["ltx", *_config(config_path), "-level", str(level), *(["-json"] if json else [])]
    return with_parent_death([str(binary), *flags,
                              _source(database, config_path, replica_url)])


def go_duration(seconds: float) -> str:
    """A Go duration (``-follow-interval``), to the millisecond."""
    return f"{max(round(seconds * 1000), 1)}ms"


def _config(config_path: Path | None) -> list[str]:
    return [] if config_path is None else ["-config", str(config_path)]


def _source(database: Path | None, config_path: Path | None, replica_url: str | None) -> str:
    """The last argument: the database's path (its replica as the config lists it), or
    the replica URL."""
    if config_path is not None:
        if database is None or replica_url is not None:
            raise ValueError("with config_path, name the database (its path), not a URL")
        return str(database)
    if replica_url is None:
        raise ValueError("name the replica: config_path and database, or replica_url")
    if urlsplit(replica_url).password:
        raise ValueError("a replica URL with a password would show in the process list: "
                         "name the replica through a config file (config_path)")
    return replica_url
