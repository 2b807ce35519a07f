"""Never replicate a stale file over a newer replica.

Started on a file whose position is behind its replica (a stale volume, a hand
restore, a file the app created before this host held the lease), Litestream logs
"detected database behind replica" and then goes on from the *local* file: the
replica's latest state becomes the stale one (LITESTREAM.md). So before Litestream
starts, every database file here is compared with its replica (_litestream/positions.py):

    fresh      the replica holds nothing                     keep the file
    in_step    at or ahead of the replica, same history       keep the file
    behind     the replica holds transactions this file lacks ┐ if_behind="restore": set
    diverged   at or past the head, but another history       ┘ it aside, restore the
                                                                replica's; "fail": refuse

A file set aside keeps everything it held: ``<db>.behind-<UTC time>`` with its
``-wal``, ``-shm`` and its Litestream history (``.<db>.behind-<time>-litestream``),
so its rows can be read back by hand. The newest ``keep_behind`` are kept.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from .._config.databases import Database
from .._config.settings import Settings
from .._exceptions import StartupError
from .._litestream.positions import (
    Head,
    PositionError,
    Verdict,
    compare,
    local_checksum,
    local_head,
    metadata_dir,
    replica_checksum,
    replica_heads,
)
from .._litestream.replica_errors import classify
from .._restore.boot import config_for_members, restore_on_boot

logger = logging.getLogger("asgi_litestream")

_MAX_RETRY_DELAY = 8.0


@dataclass(frozen=True, slots=True)
class Stale:
    """A database file here that must not be replicated over its replica."""

    db: Database  # a folder's member as a database of its own
    verdict: Verdict  # "behind" or "diverged"
    here: Head
    there: Head

    def describe(self) -> str:
        if self.verdict == "behind":
            return (f"{self.db.path} is behind its replica (txid {self.here.txid} here, "
                    f"{self.there.txid} in {self.db.replica})")
        return (f"{self.db.path} has diverged from its replica (txid {self.here.txid} "
                f"here, {self.there.txid} in {self.db.replica}, and this file's "
                f"transaction {self.there.txid} is not the replica's)")


def find_stale(settings: Settings, env: Mapping[str, str], *, binary: Path | None,
               config_path: Path | None) -> list[Stale]:
    """Blocking. Every database file here that is behind or diverged from its replica;
    one listing per database, one per folder. Raises PositionError."""
    found: list[Stale] = []
    secrets = settings.secrets()
    for db in settings.databases:
        if db.is_folder:
            if not db.path.is_dir():
                continue
            heads = replica_heads(db, env, secrets=secrets)
            for name, there in heads.items():
                path = db.path / name
                if db.holds(path) and path.exists():
                    _check(db.member(path), there, env, found)
        elif db.path.exists():
            there = replica_heads(db, env, binary=binary, config_path=config_path,
                                  secrets=secrets)[""]
            _check(db, there, env, found)
    return found


def _check(db: Database, there: Head, env: Mapping[str, str], found: list[Stale]) -> None:
    here = local_head(db.path)
    same: bool | None = None
    if there.name is not None and here.txid >= there.txid > 0:
        ours = local_checksum(db.path, there.name, there.level)
        if ours is not None:
            theirs = replica_checksum(db, there, env)
            same = None if theirs is None else ours == theirs
    verdict = compare(here, there, same_file=same)
    if verdict in ("behind", "diverged"):
        found.append(Stale(db, verdict, here, there))


async def read_positions(settings: Settings, env: Mapping[str, str], *, binary: Path,
                         config_path: Path) -> list[Stale]:
    """find_stale, retried while the replica cannot be read, up to ``restore_timeout``:
    starting on a file that may be stale would replicate it over the backup."""
    deadline = time.monotonic() + settings.restore_timeout
    delay, attempt = 1.0, 0
    while True:
        attempt += 1
        try:
            # Abandoned on cancel (a shutdown behind the gate): a hung listing must not
            # hold the server's shutdown.
            return await anyio.to_thread.run_sync(functools.partial(
                find_stale, settings, env, binary=binary, config_path=config_path),
                abandon_on_cancel=True)
        except PositionError as exc:
            failure = classify(exc.__cause__ or str(exc))
            if exc.permanent or failure.permanent:
                # No bucket, refused keys, a folder that cannot be listed: no retry
                # mends it (#21).
                cause = failure.describe() if failure.permanent else str(exc)
                fix = failure.fix if failure.permanent else (
                    "use an s3:// (with boto3) or file:// replica for a folder of databases")
                raise StartupError(f"cannot read the replica's position to compare with "
                                   f"the database file(s) here: {cause}. Fix: {fix}. Not "
                                   "retried: no retry can mend this") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupError(
                    f"could not read the replica's position to compare with the database "
                    f"file(s) here ({attempt} attempts in {settings.restore_timeout:g}s): "
                    f"{exc}. Fix: check the replica URL, the credentials and that the "
                    "storage is reachable from here, or raise restore_timeout; Litestream "
                    "did not start, so no stale file was replicated over the backup"
                ) from None
            wait = min(delay, remaining)
            logger.warning("litestream %r: cannot read the replica's position (attempt "
                           "%d): %s; retrying in %.0fs, giving up in %.0fs",
                           settings.name, attempt, exc, wait, remaining)
            await anyio.sleep(wait)
            delay = min(delay * 2, _MAX_RETRY_DELAY)


async def guard(settings: Settings, env: Mapping[str, str], *, binary: Path,
                config_path: Path, on_start: Callable[[], None]) -> list[Path]:
    """Before Litestream replicates: set aside and restore (or refuse, with
    ``if_behind="fail"``) every file behind or diverged from its replica. Returns the
    kept copies."""
    stale = await read_positions(settings, env, binary=binary, config_path=config_path)
    if not stale:
        return []
    if settings.if_behind == "fail":
        raise StartupError(
            f"{'; '.join(s.describe() for s in stale)}. Replicating it would replace the "
            "replica's newer state. Fix: move the file away so that it is restored from "
            "the replica (its rows can be copied back by hand), or set "
            "if_behind='restore' (ASGI_LITESTREAM_IF_BEHIND=restore) to do that on start")
    on_start()
    kept = []
    for item in stale:
        aside = await anyio.to_thread.run_sync(set_aside, item.db.path, settings.keep_behind)
        kept.append(aside)
        logger.warning("litestream %r: %s: moved it to %s (rows in it can be read back by "
                       "hand) and restoring the replica's copy", settings.name,
                       item.describe(), aside)
    named = [s.db for s in stale if not _in_a_folder(settings, s.db)]
    members = [s.db for s in stale if _in_a_folder(settings, s.db)]
    jobs = [(db, config_path, env) for db in named]
    if members:
        side_config, side_env = config_for_members(settings, members, config_path, env,
                                                   file_name="behind.yml")
        jobs += [(db, side_config, side_env) for db in members]
    for db, config, child_env in jobs:
        await restore_on_boot(binary, config, db, child_env, name=settings.name,
                              timeout=settings.restore_timeout, secrets=settings.secrets())
    return kept


def _in_a_folder(settings: Settings, db: Database) -> bool:
    return any(folder.holds(db.path) for folder in settings.databases if folder.is_folder)


def set_aside(path: Path, keep: int) -> Path:
    """Move ``path`` with its sidecars and its Litestream history to
    ``<name>.behind-<UTC time>``; keep the newest ``keep`` such copies. Returns it."""
    millis = time.time_ns() // 1_000_000
    stamp = (time.strftime("%Y%m%dT%H%M%S", time.gmtime(millis // 1000))
             + f".{millis % 1000:03d}Z")
    aside = path.with_name(f"{path.name}.behind-{stamp}")
    if aside.exists() or Path(f"{aside}-wal").exists():
        # Past every copy of this same millisecond, pruned or not: never a reused name,
        # which would sort as the oldest.
        serial = max((_stamp_order(p)[1] for p in kept_copies(path) if stamp in p.name),
                     default=1) + 1
        aside = path.with_name(f"{path.name}.behind-{stamp}-{serial}")
    for suffix in ("-wal", "-shm", ""):  # the database last: never a file without its WAL
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    if metadata_dir(path).is_dir():
        os.replace(metadata_dir(path), metadata_dir(aside))
    prune_aside(path, keep)
    return aside


def kept_copies(path: Path) -> list[Path]:
    """The set-aside copies of ``path``, oldest first."""
    prefix = f"{path.name}.behind-"
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    return sorted((path.with_name(name) for name in names
                   if name.startswith(prefix) and not name.endswith(("-wal", "-shm"))),
                  key=_stamp_order)


def _stamp_order(path: Path) -> tuple[str, int]:
    stamp, _, serial = path.name.rpartition(".behind-")[2].partition("-")
    return stamp, int(serial) if serial.isdigit() else 1


def prune_aside(path: Path, keep: int) -> None:
    copies = kept_copies(path)
    for old in copies[:max(len(copies) - keep, 0)]:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(metadata_dir(old), ignore_errors=True)
        logger.info("litestream: removed %s, an older copy set aside (keep_behind=%d)",
                    old, keep)
