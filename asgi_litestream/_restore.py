"""Restore databases from their replicas with `litestream restore`."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._config import Database
from ._exceptions import RestoreError
from ._logs import scrub

logger = logging.getLogger("asgi_litestream")


def restore_database(
    binary: Path, config_path: Path, database: Database, env: Mapping[str, str],
    *, overwrite: bool = False, timeout: float = 600.0, secrets: Sequence[str] = (),
) -> bool:
    """Restore ``database`` from its replica. Returns False when the replica is empty.

    The replica is named through the config file, never on the command line, so a
    password in its URL stays in the environment. The copy is restored beside the
    database under a temporary name and renamed into place, so the app can never open
    a half-restored file.
    """
    target = database.path
    if target.exists() and not overwrite:
        raise RestoreError(f"{target} already exists; refusing to overwrite it. Fix: move "
                           "it away, or pass overwrite (--force) to replace it")
    partial = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    _remove(partial)
    command = [str(binary), "restore", "-config", str(config_path), "-if-replica-exists",
               "-o", str(partial), str(target)]
    try:
        result = subprocess.run(command, env=dict(env), capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        _remove(partial)
        raise RestoreError(f"restoring {target} from {database.replica} took over "
                           f"{timeout}s. Fix: check the replica is reachable") from None
    lines = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0:
        _remove(partial)
        reason = scrub(lines[-1], secrets) if lines else "no output"
        raise RestoreError(f"restoring {target} from {database.replica} failed "
                           f"(exit {result.returncode}): {reason}")
    if not partial.exists():
        logger.info("no backup of %s in %s: starting fresh", target, database.replica)
        return False
    for suffix in ("-wal", "-shm"):
        _remove(Path(str(target) + suffix))  # stale sidecars would corrupt the restored copy
    os.replace(partial, target)
    logger.info("restored %s from %s", target, database.replica)
    return True


def _remove(path: Path) -> None:
    for candidate in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        candidate.unlink(missing_ok=True)
