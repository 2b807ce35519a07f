"""What each ``asgi-litestream`` command does (the parser is in _cli/main.py)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from .._config.databases import Database
from .._config.options import OPTIONS
from .._config.settings import Settings
from .._exceptions import ConfigError, LitestreamError, RestoreError
from .._litestream.binary import FROM_CACHE, check_litestream, find_litestream_for
from .._litestream.control import ControlClient
from .._litestream.download import download_litestream
from .._litestream.listing import with_folders_listed
from .._litestream.logs import scrub
from .._litestream.workdir import generated_config
from .._locks.workers import Leadership
from .._restore.boot import restore_database
from .._restore.points import (
    SNAPSHOT_LEVEL,
    RestorePoint,
    find_database,
    list_restore_points,
    restore_lock,
    restore_to,
)
from .._restore.verify import Verification, verify
from .._state import State
from .manual import FAILED, NO_ANSWER, OK
from .progress import Written, watching
from .progress import size_text as _size
from .words import Words, describe

PROG = "asgi-litestream"
logger = logging.getLogger("asgi_litestream")


# -- download ------------------------------------------------------------------


def run_download(args: argparse.Namespace) -> int:
    path = download_litestream(
        version=args.version,
        # _binary reads ASGI_LITESTREAM_CACHE_DIR itself; the URL variable belongs to Settings.
        download_url=args.download_url or os.environ.get("ASGI_LITESTREAM_DOWNLOAD_URL") or None,
        cache_dir=args.cache_dir,
        sha256=args.sha256,
    )
    # A build step learns now, not the app at its start, that it cannot run here.
    check_litestream(path, origin=FROM_CACHE)
    print(path)  # noqa: T201
    return 0


# -- config --------------------------------------------------------------------


def run_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The YAML holds ${VAR} references, not secrets; scrub anyway, since this output
    # ends up in terminals and CI logs.
    sys.stdout.write(scrub(settings.to_yaml(), settings.secrets()))
    return 0


# -- restore -------------------------------------------------------------------


def run_restore(args: argparse.Namespace) -> int:
    settings = _selected(args)
    rewind = args.timestamp is not None or args.txid is not None
    for flag, value in (("--output", args.output), ("--txid", args.txid)):
        if value is not None and len(settings.databases) != 1:
            raise RestoreError(f"{flag} restores one database, and {len(settings.databases)} "
                               "are configured. Fix: pick one with --only PATH")
    report = _Report(args)
    if args.output is not None:
        if args.force or args.if_db_not_exists:
            raise RestoreError("--output never overwrites a file, so --force and "
                               "--if-db-not-exists do not apply. Fix: drop them")
        db = settings.databases[0]
        output = Path(args.output).expanduser().absolute()
        binary = find_litestream_for(settings)
        with report.restoring(output) as written:
            txid = restore_to(settings, binary, db, output, timestamp=args.timestamp,
                              txid=args.txid)
        report.restored(db, f"restored {db.path} as of txid {txid} into {output}", txid,
                        written, output=output)
        return report.done()
    existing = [db for db in settings.databases if db.path.exists()]
    if existing and not (args.force or args.if_db_not_exists):
        # Checked for all databases first, so that a refusal never leaves half of them restored.
        names = ", ".join(str(db.path) for db in existing)
        raise RestoreError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; refusing to overwrite. "
            "Fix: move it away, pass --force to replace it with the replica's copy, or "
            "--if-db-not-exists to keep it"
        )
    keep = [] if args.force or not args.if_db_not_exists else existing
    for db in keep:
        report.not_restored(db, "kept", f"kept {db.path}: it already exists")
    todo = [db for db in settings.databases if db not in keep]
    if not todo:
        return report.done()
    binary = find_litestream_for(settings)
    # Over an existing database, only while no app runs it (held until the end).
    with restore_lock(todo if rewind else [db for db in todo if db in existing]):
        if rewind:
            for db in todo:
                with report.restoring(db.path) as written:
                    txid = restore_to(settings, binary, db, timestamp=args.timestamp,
                                      txid=args.txid)
                report.restored(db, f"restored {db.path} as of txid {txid} from {db.replica}",
                                txid, written)
        else:
            _restore_latest(settings, binary, todo, existing, report, force=args.force)
    return report.done()


def _restore_latest(settings: Settings, binary: Path, todo: list[Database],
                    existing: list[Database], report: _Report, *, force: bool) -> None:
    with generated_config(settings) as (config_path, _):
        env = settings.child_env(os.environ)
        for db in todo:
            with report.restoring(db.path) as written:
                txid = restore_database(binary, config_path, db, env, overwrite=force,
                                        timeout=settings.restore_timeout,
                                        secrets=settings.secrets())
            if txid is not None:
                report.restored(db, f"restored {db.path} from {db.replica}", txid, written)
            elif db in existing:
                report.not_restored(db, "no_backup", f"no backup of {db.path} in "
                                    f"{db.replica}: kept the existing database")
            else:
                report.not_restored(db, "no_backup", f"no backup of {db.path} in "
                                    f"{db.replica}: it starts fresh")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """What `restore` did with one database (`restore --json`)."""

    db: Database
    outcome: str  # restored, kept (--if-db-not-exists), no_backup (an empty replica)
    txid: int | None = None
    written: Written | None = None
    output: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.db.path), "replica": self.db.replica, "outcome": self.outcome,
                "txid": self.txid,
                "bytes": None if self.written is None else self.written.bytes,
                "seconds": None if self.written is None else round(self.written.seconds, 3),
                "output": None if self.output is None else str(self.output)}


class _Report:
    """What `restore` did, database by database: a line each as it happens, with the
    size and time after it on a terminal (and a progress line while it restores); or,
    with --json, one document at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json: bool = args.json
        # Progress is for someone watching: not in a pipe or a log, not asked to be quiet.
        self.live = not args.json and not args.quiet and sys.stdout.isatty()
        self.outcomes: list[_Outcome] = []

    def restoring(self, target: Path) -> contextlib.AbstractContextManager[Written]:
        return watching(target, stream=sys.stdout if self.live else None)

    def restored(self, db: Database, line: str, txid: int, written: Written,
                 output: Path | None = None) -> None:
        self._add(_Outcome(db=db, outcome="restored", txid=txid, written=written,
                           output=output),
                  line + (f" ({written.summary()})" if self.live else ""))

    def not_restored(self, db: Database, outcome: str, line: str) -> None:
        self._add(_Outcome(db=db, outcome=outcome), line)

    def _add(self, outcome: _Outcome, line: str) -> None:
        self.outcomes.append(outcome)
        if not self.json:
            _say(line)

    def done(self) -> int:
        if self.json:
            body = {"databases": [outcome.to_json() for outcome in self.outcomes]}
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return OK


def parse_txid(text: str) -> int:
    """--txid: decimal, as `backups` and the status route show it, or Litestream's hex
    (16 digits, or 0x...)."""
    try:
        if text.lower().startswith("0x") or len(text) == 16:
            return int(text, 16)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a transaction id (decimal, or 16 hex digits)") from None


# -- backups -------------------------------------------------------------------


def run_backups(args: argparse.Namespace) -> int:
    settings = _selected(args)
    points = list_restore_points(settings, find_litestream_for(settings))
    by_db = {db.path: [p for p in points if p.database == db.path] for db in settings.databases}
    if args.json:
        body = {"databases": [{"path": str(db.path), "replica": db.replica,
                               "restore_points": [p.to_json() for p in by_db[db.path]]}
                              for db in settings.databases]}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 0
    lines: list[str] = []
    for db in settings.databases:
        lines += [f"{db.path}  (replica {db.replica})", *_describe_points(by_db[db.path]), ""]
    if points:
        lines += ["Rewind into a side file: asgi-litestream restore --output FILE --txid TXID "
                  "(exactly that row),", "or --timestamp TIME (the last row created before "
                  "TIME; created is shown to the second)."]
    sys.stdout.write("".join(line + "\n" for line in lines).rstrip("\n") + "\n")
    return 0


def _describe_points(points: list[RestorePoint]) -> list[str]:
    if not points:
        return ["  no backup"]
    first, last = points[0], points[-1]
    rows = [("txid", "created (UTC)", "size", "from")] + [
        (str(p.txid), p.created_text, _size(p.size),
         f"{'snapshot' if p.level == SNAPSHOT_LEVEL else f'L{p.level}'} {p.min_txid}-{p.txid}")
        for p in points]
    txid, when, size = (max(len(row[i]) for row in rows) for i in range(3))
    return [f"  {len(points)} restore point{'s' if len(points) > 1 else ''}: txid "
            f"{first.txid} to {last.txid}, {first.created_text} to {last.created_text}"] + [
        f"  {a:<{txid}}  {b:<{when}}  {c:>{size}}  {d}" for a, b, c, d in rows]


def _selected(args: argparse.Namespace) -> Settings:
    """The settings, narrowed to --only's database (keeping its replica URL); a
    folder stands for the databases its replica holds."""
    settings = with_folders_listed(settings_from(args))
    if args.only is None:
        return settings
    try:
        only = find_database(settings, args.only)
    except ConfigError as exc:  # the database named is --only's, not --database's
        raise ConfigError("only", exc.value, exc.problem, exc.fix) from None
    return dataclasses.replace(settings, databases=(only,))


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201


# -- verify --------------------------------------------------------------------

def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 verified, 1 not verified; any error means no answer (2), never a 1 that
    a cron job would read as a broken backup."""
    try:
        return _verify(args)
    except LitestreamError as exc:
        print(f"{PROG}: error: {describe(exc, Words.of(args, os.environ))}",  # noqa: T201
              file=sys.stderr)
        return NO_ANSWER


def _verify(args: argparse.Namespace) -> int:
    """Restore each replica into a side file and check it; when the app runs, also
    that it holds everything its running Litestream has (via the leader's socket)."""
    settings = _selected(args)
    binary = find_litestream_for(settings)
    leader = Leadership(settings.databases).leader_info()
    socket = leader.socket if leader is not None and leader.state is State.RUNNING else None
    with generated_config(settings) as (config, workdir):
        env = settings.child_env(os.environ)

        async def run() -> Verification:
            control = ControlClient(Path(socket)) if socket else None
            try:
                return await verify(binary, config, settings.databases, env, control=control,
                                    scratch=workdir.path, timeout=settings.restore_timeout,
                                    secrets=settings.secrets())
            finally:
                if control is not None:
                    await control.aclose()

        result = anyio.run(run)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    for db in result.databases if not args.json else ():
        if not db.ok:
            _say(f"FAILED {db.path}: {db.reason}")
        elif db.txid is None:
            _say(f"verified {db.path}: the replica restores (txid {db.restored_txid}), "
                 "integrity ok; position not compared (no running app found)")
        else:
            _say(f"verified {db.path}: the replica restores to txid {db.restored_txid} "
                 f"(the app was at {db.txid}), integrity ok")
    return OK if result.ok else FAILED


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_options(**{option.name: getattr(args, option.name)
                                    for option in OPTIONS if option.flag is not None})
