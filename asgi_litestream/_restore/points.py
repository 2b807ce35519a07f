"""Restore points and point-in-time restore: rewind a database to just before a mistake.

A replica is a chain of LTX files: level 0 holds one sync each, levels 1-3 the same
changes compacted into 30 s, 5 min and 1 h windows, level 9 full snapshots; the fine
levels are kept for minutes, the coarse ones for a day, so the further back, the coarser
the states one can rewind to. To pick one ("just before the bad migration") an operator
needs, per state the replica can give back: its txid (to restore exactly it), when the
replica got it (to place it on the incident's timeline) and the size of the change that
led to it (a migration stands out). Every LTX file ends at such a state, so there is one
:class:`RestorePoint` per distinct last txid across all levels, taken from the earliest
file that reaches it: that is when the state became restorable, and a coarser copy of
it adds no choice. ``timestamp=T`` restores the last point the replica got before T
(Litestream compares to the millisecond; the listing is to the second); ``txid=N``
exactly point N.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from .._config.databases import Database
from .._config.settings import Settings
from .._exceptions import ConfigError, RestoreError
from .._litestream.binary import find_litestream_for
from .._litestream.commands import ltx_command, restore_command
from .._litestream.logs import scrub
from .._litestream.rfc3339 import parse_time
from .._litestream.workdir import generated_config
from .._locks.workers import Leadership
from .._state import State
from .boot import remove_partial

logger = logging.getLogger("asgi_litestream")

SNAPSHOT_LEVEL = 9
_NO_MATCH = "no matching backup files available"
# Databases whose leader locks this process holds for a restore (restore_lock nests).
_held: set[Path] = set()


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePoint:
    """A state the replica can give back: ``database`` right after transaction ``txid``."""

    database: Path
    txid: int  # restore_to(txid=...) / --txid restores exactly this state
    created: datetime  # when the replica got it (UTC)
    size: int  # bytes of the LTX file that brought it: a big one is a big change
    level: int  # 0: one sync; 1-3: compacted windows; 9: a full snapshot
    min_txid: int  # that file holds transactions min_txid..txid

    @property
    def created_text(self) -> str:
        """``created`` as the command line shows it: RFC 3339 UTC, to the second."""
        return self.created.strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "created": self.created_text, "size": self.size,
                "level": self.level, "min_txid": self.min_txid}


def parse_timestamp(value: datetime | str, option: str = "timestamp") -> datetime:
    """An aware datetime or an RFC 3339 string (``2026-11-30T14:03:00Z``) → UTC."""
    if isinstance(value, str):
        try:
            value = parse_time(value.strip().replace(" ", "T", 1))  # as people type it
        except ValueError:
            raise ConfigError(option, value, "is not an RFC 3339 time (or not a real one)",
                              "write it like 2026-11-30T14:03:00Z or 2026-11-30T15:03:00+01:00"
                              ) from None
    if not isinstance(value, datetime):
        raise ConfigError(option, value, "must be a datetime or an RFC 3339 string",
                          "pass e.g. datetime(2026, 11, 30, 14, 3, tzinfo=timezone.utc)")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(option, value, "has no time zone, so it is ambiguous",
                          "pass an aware datetime (tzinfo=timezone.utc)")
    return value.astimezone(timezone.utc)


def restore_points(database: Path, files: Any) -> list[RestorePoint]:
    """``litestream ltx -json`` output (every level) → one point per last txid, oldest first."""
    best: dict[int, RestorePoint] = {}
    try:
        for file in files:
            point = RestorePoint(database=database, txid=int(file["max_txid"], 16),
                                 created=parse_timestamp(file["timestamp"]),
                                 size=int(file["size"]), level=int(file["level"]),
                                 min_txid=int(file["min_txid"], 16))
            known = best.get(point.txid)
            if known is None or (point.created, point.level) < (known.created, known.level):
                best[point.txid] = point
    except (TypeError, KeyError, ValueError) as exc:
        raise RestoreError(f"cannot read Litestream's list of LTX files for {database} "
                           f"({type(exc).__name__}: {exc}). Fix: use Litestream 0.5.17") from None
    return [best[txid] for txid in sorted(best)]


def list_restore_points(settings: Settings, binary: Path | None = None) -> list[RestorePoint]:
    """Every restore point of every configured database, database by database, oldest
    first (none for a database with no backup). ``binary``: the settings' by default."""
    points: list[RestorePoint] = []
    with _litestream(settings, binary) as (found, config, run):
        for db in settings.databases:
            output = run(ltx_command(found, config_path=config, database=db.path),
                         doing=f"listing the backups of {db.path} in {db.replica}")
            points += restore_points(db.path, _document(output))
    return points


async def list_restore_points_within(
    binary: Path, config_path: Path, databases: Sequence[Database], env: Mapping[str, str],
    *, timeout: float, at_once: int = 4, secrets: Sequence[str] = (),
) -> dict[Path, list[RestorePoint] | None]:
    """:func:`list_restore_points` for a caller that cannot wait (the status page), with
    an existing config: ``{database: its points}``, None for a database that could not
    be listed within ``timeout`` (the reason is logged at debug level). One
    ``litestream ltx`` per database, ``at_once`` at a time; each is an anyio process,
    killed and reaped at the deadline or when the caller is cancelled, never left
    running behind an abandoned thread."""
    found: dict[Path, list[RestorePoint] | None] = dict.fromkeys(
        (db.path for db in databases), None)
    limiter = anyio.CapacityLimiter(at_once)

    async def list_one(db: Database) -> None:
        async with limiter:
            result = await anyio.run_process(
                ltx_command(binary, config_path=config_path, database=db.path),
                env=dict(env), check=False, stdin=subprocess.DEVNULL)
        stdout = result.stdout.decode("utf-8", "replace")
        try:
            if result.returncode != 0:
                lines = (stdout + result.stderr.decode("utf-8", "replace")).strip().splitlines()
                raise RestoreError(f"exit {result.returncode}: "
                                   f"{scrub(lines[-1], secrets) if lines else 'no output'}")
            found[db.path] = restore_points(db.path, _document(stdout))
        except RestoreError as exc:
            logger.debug("listing the backups of %s in %s failed: %s", db.path, db.replica, exc)

    with anyio.move_on_after(timeout) as deadline:
        async with anyio.create_task_group() as task_group:
            for db in databases:
                task_group.start_soon(list_one, db)
    if deadline.cancelled_caught:
        logger.debug("listing the backups: %d of %d databases not listed within %gs",
                     sum(points is None for points in found.values()), len(found), timeout)
    return found


def find_database(settings: Settings, which: Database | str | os.PathLike[str]) -> Database:
    """The configured database ``which`` names: its path, file name or file stem."""
    if isinstance(which, Database) and which in settings.databases:
        return which
    text = os.fspath(which.path if isinstance(which, Database) else which)
    path = Path(text).expanduser().absolute()
    found = [db for db in settings.databases if db.path == path] or [
        db for db in settings.databases if text in (db.path.name, db.path.stem)]
    if len(found) != 1:
        names = ", ".join(str(db.path) for db in settings.databases)
        raise ConfigError("database", text, f"is not one of the configured databases ({names})",
                          "name one of them by its path or file name")
    return found[0]


def restore_to(
    settings: Settings, binary: Path | None, database: Database | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None, *,
    timestamp: datetime | str | None = None, txid: int | None = None,
) -> int:
    """Restore ``database`` as it was at ``timestamp`` (the last restore point before
    it) or at ``txid`` (exactly), or else its latest state; return the txid restored.

    ``output`` must not exist: inspect the rewound copy there, beside the live database.
    Without ``output`` the database file itself is replaced, only while no app runs it:
    its leader lock is held throughout, and RestoreError says so when an app holds it.
    The copy is written under a temporary name and renamed into place.
    """
    db = find_database(settings, database)
    at_txid, at_time, wanted = _point(timestamp, txid)
    fix = ("check the replica URL" if at_txid is None and at_time is None
           else "pick a point that `asgi-litestream backups` lists")
    target = db.path if output is None else Path(output).expanduser().absolute()
    if output is not None:
        taken = [p for p in _with_sidecars(target) if os.path.lexists(p)]
        if taken:
            raise RestoreError(f"{taken[0]} already exists; refusing to overwrite it. Fix: "
                               "restore into a new file, or move that one away")
    partial = target.with_name(f".{target.name}.rewind-{os.getpid()}")
    guarded = [d for d in settings.databases if d.path == target]
    with restore_lock(guarded), _litestream(settings, binary) as (found, config, run):
        remove_partial(partial)
        try:
            command = restore_command(found, config_path=config, database=db.path,
                                      output=partial, json=True, txid=at_txid,
                                      timestamp=at_time)
            result = _document(run(command, doing=f"restoring {db.path} from {db.replica}",
                                   no_match=f"{db.path} has no restore point {wanted} in "
                                   f"{db.replica}. Fix: {fix}"))
            restored = int(result["txid"], 16)
            _place(partial, target, replace=output is None)
        finally:
            remove_partial(partial)
    logger.info("restored %s as of txid %d into %s", db.path, restored, target)
    return restored


@contextlib.contextmanager
def restore_lock(databases: Sequence[Database]) -> Iterator[None]:
    """Hold ``databases``' leader locks so that no app replicates them while they are
    replaced; RestoreError, taking none, while an app (or its Litestream) runs one."""
    taken: list[Leadership] = []
    try:
        for db in databases:
            if db.path in _held:
                continue
            lock = Leadership((db,))
            if not lock.try_lead() or not lock.others_gone():
                info = lock.leader_info()
                lock.resign()
                pid = (f" (pid {info.pid})" if info is not None and info.pid is not None
                       and info.state is not State.STOPPED else "")
                raise RestoreError(
                    f"{db.path} is in use: an app is running it{pid}, so restoring over it "
                    "would corrupt it and its replica. Fix: stop the app first, or restore "
                    "into another file (--output)")
            taken.append(lock)
            _held.add(db.path)
        yield
    finally:
        for lock in taken:
            _held.difference_update(lock.paths)
            lock.resign()


def _point(timestamp: datetime | str | None, txid: int | None
           ) -> tuple[int | None, str | None, str]:
    """The txid or the RFC 3339 time asked for, and how to name the point in an error."""
    if timestamp is not None and txid is not None:
        raise ConfigError("txid", txid, "cannot be combined with a timestamp",
                          "pass either timestamp or txid")
    if timestamp is not None:
        text = parse_timestamp(timestamp).isoformat().replace("+00:00", "Z")
        return None, text, f"before {text}"
    if txid is not None:
        if isinstance(txid, bool) or not isinstance(txid, int) or not 0 < txid < 2**64:
            raise ConfigError("txid", txid, "must be a positive transaction id",
                              "pass a txid that `asgi-litestream backups` lists")
        return txid, None, f"at txid {txid}"
    return None, None, "at all"


@contextlib.contextmanager
def _litestream(settings: Settings, binary: Path | None
                ) -> Iterator[tuple[Path, Path, Callable[..., str]]]:
    """The binary, the generated config, and a runner of ``litestream`` command lines
    with the child env."""
    found = binary or find_litestream_for(settings)
    with generated_config(settings) as (config, _):
        env = settings.child_env(os.environ)

        def run(argv: list[str], *, doing: str, no_match: str = "") -> str:
            try:
                result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                        timeout=settings.restore_timeout,
                                        stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise RestoreError(f"{doing} took over {settings.restore_timeout}s. Fix: "
                                   "check the replica is reachable") from None
            if result.returncode != 0:
                lines = (result.stdout + result.stderr).strip().splitlines()
                reason = scrub(lines[-1], settings.secrets()) if lines else "no output"
                if no_match and _NO_MATCH in reason:
                    raise RestoreError(no_match)
                raise RestoreError(f"{doing} failed (exit {result.returncode}): {reason}")
            return result.stdout

        yield found, config, run


def _document(stdout: str) -> Any:
    """The JSON document Litestream printed (after any log lines): a list, or an
    object with a txid (restore's result)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line in ("[", "{", "[]")), len(lines))
    try:
        document = json.loads("\n".join(lines[start:]))
        if isinstance(document, list) or isinstance(document.get("txid"), str):
            return document
    except (ValueError, AttributeError):
        pass
    raise RestoreError(f"Litestream printed no JSON result: {stdout[-200:]!r}. "
                       "Fix: use Litestream 0.5.17")


def _place(partial: Path, target: Path, *, replace: bool) -> None:
    if replace:
        for sidecar in _with_sidecars(target)[1:]:
            sidecar.unlink(missing_ok=True)  # a stale WAL would corrupt the restored copy
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)  # unlike a rename, never replaces a file made meanwhile
    except FileExistsError:
        raise RestoreError(f"{target} appeared during the restore; left it alone. Fix: "
                           "restore into a new file") from None
    except OSError:  # a filesystem without hard links
        os.replace(partial, target)


def _with_sidecars(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
