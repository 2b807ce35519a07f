"""Verify: prove end to end that the replica restores, and holds what was committed.

For each database, without ever writing to it or touching its file:

1. ``POST /sync`` with wait: the database's position ``txid`` when the verification
   began, and the replica confirmed to hold it;
2. ``litestream restore`` of the replica's latest state into a private side file;
   Litestream checks every LTX file's checksum on the way, so a damaged replica fails
   here;
3. the restored position must be at or past ``txid`` (every transaction committed
   before the verification began is in it), and SQLite's ``PRAGMA integrity_check``
   must answer ``ok``.

Why not a sentinel row, as litestream-ruby does: writing into the app's database puts a
table of ours in its schema (migrations, dumps and read-only followers then trip over
it), and proves no more than the position does, since a restore reproduces
checksummed page images, not rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._config.databases import Database
from .._litestream.commands import restore_command
from .._litestream.control import ControlClient, ControlError
from .._litestream.logs import scrub
from .._litestream.replica_errors import classify, error_line

logger = logging.getLogger("asgi_litestream")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseVerification:
    """The verification of one database."""

    path: str
    ok: bool
    txid: int | None = None  # the database's position when the verification began
    restored_txid: int | None = None  # what the restore of the replica reached
    reason: str | None = None  # why not ok


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """The result of one verification of every database."""

    ok: bool
    at: str  # when it began, RFC 3339 UTC
    duration_s: float
    databases: tuple[DatabaseVerification, ...] = field(default=())

    @property
    def reason(self) -> str | None:
        failed = [f"{d.path}: {d.reason}" for d in self.databases if not d.ok]
        return "; ".join(failed) or None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": self.at, "duration_s": self.duration_s,
                "reason": self.reason,
                "databases": [{"path": d.path, "ok": d.ok, "txid": d.txid,
                               "restored_txid": d.restored_txid, "reason": d.reason}
                              for d in self.databases]}


async def verify(
    binary: Path, config_path: Path, databases: Sequence[Database], env: Mapping[str, str],
    *, control: ControlClient | None, scratch: Path, timeout: float, secrets: Sequence[str],
) -> Verification:
    """Verify every database; ``control`` is the running Litestream's (None: the
    position is not checked, only that the replica restores to a sound database)."""
    began = time.monotonic()
    at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    results = []
    for db in databases:
        # Unique per call: a background verification and an app's may overlap.
        side = scratch / f"verify-{uuid.uuid4().hex[:12]}-{db.path.name}"
        try:
            results.append(await _verify_one(binary, config_path, db, env, control=control,
                                             side=side, timeout=timeout, secrets=secrets))
        finally:
            for leftover in (side, *(side.with_name(side.name + s) for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
    return Verification(ok=all(r.ok for r in results), at=at,
                        duration_s=round(time.monotonic() - began, 3),
                        databases=tuple(results))


async def _verify_one(
    binary: Path, config_path: Path, db: Database, env: Mapping[str, str], *,
    control: ControlClient | None, side: Path, timeout: float, secrets: Sequence[str],
) -> DatabaseVerification:
    path = str(db.path)
    txid = None
    if control is not None and db.path.exists():
        try:
            txid = (await control.sync_durably(db.path, timeout=timeout)).txid
        except ControlError as exc:
            return DatabaseVerification(path=path, ok=False,
                                        reason=f"the replica did not confirm: {exc}")
    side.unlink(missing_ok=True)
    command = restore_command(binary, config_path=config_path, database=db.path, output=side,
                              json=True, if_replica_exists=True)
    with anyio.move_on_after(timeout) as scope:
        result = await anyio.run_process(command, env=dict(env), check=False,
                                          stdin=subprocess.DEVNULL)
    if scope.cancelled_caught:
        return DatabaseVerification(path=path, ok=False, txid=txid,
                                    reason=f"the restore took over {timeout:g}s")
    output = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
    if result.returncode != 0:
        said = scrub(error_line(output) or f"exit {result.returncode}", secrets)
        return DatabaseVerification(path=path, ok=False, txid=txid, reason=_unread(said))
    if not side.exists():
        ok = not txid
        return DatabaseVerification(path=path, ok=ok, txid=txid, restored_txid=0,
                                    reason=None if ok else "the replica holds no backup")
    restored = _restored_txid(result.stdout.decode("utf-8", "replace"))
    # A shutdown must not wait for the check of a big copy: abandon the thread (the
    # side file is removed under it, which SQLite on Linux survives).
    check = await anyio.to_thread.run_sync(_integrity_check, side, abandon_on_cancel=True)
    if check != "ok":
        return DatabaseVerification(path=path, ok=False, txid=txid, restored_txid=restored,
                                    reason=f"integrity_check of the restored copy: {check}")
    if txid is not None and (restored is None or restored < txid):
        return DatabaseVerification(
            path=path, ok=False, txid=txid, restored_txid=restored,
            reason=f"the restored copy stops at txid {restored}, before {txid}")
    return DatabaseVerification(path=path, ok=True, txid=txid, restored_txid=restored)


def _unread(said: str) -> str:
    """Why the restore failed: the replica could not be read (the cause and, for what
    no retry mends, the fix), or it was read and does not restore."""
    failure = classify(said)
    if failure.permanent:
        return f"cannot read the replica: {failure.cause}. Fix: {failure.fix} ({said})"
    if failure.recognised:
        return f"cannot read the replica now: {failure.cause} ({said})"
    return f"the replica does not restore: {said}"


def _restored_txid(stdout: str) -> int | None:
    start = stdout.find("{")
    try:
        summary = json.loads(stdout[start:]) if start >= 0 else {}
        return int(str(summary["txid"]), 16)
    except (ValueError, KeyError, TypeError):
        return None


def _integrity_check(path: Path) -> str:
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "; ".join(str(r[0]) for r in rows[:5])


class Verifier:
    """Runs verifications for one service, one at a time (each is a full restore), keeps
    the last result, logs it, and tells ``on_result`` (the leader publishes it).

    ``env`` is the service's own environment, read at each run (rotated keys are in
    it); ``secrets()`` the secrets to scrub now, rotated-in keys included."""

    def __init__(self, *, name: str, binary: Path, config_path: Path,
                 databases: Sequence[Database], env: Mapping[str, str], timeout: float,
                 secrets: Callable[[], Sequence[str]],
                 control: Callable[[], ControlClient | None],
                 on_result: Callable[[], None]) -> None:
        self.last: Verification | None = None
        self._name = name
        self._args = (binary, config_path, databases, env)
        self._timeout = timeout
        self._secrets = secrets
        self._control = control
        self._on_result = on_result
        self._lock = anyio.Lock()

    async def verify(self) -> Verification:
        async with self._lock:
            result = await verify(*self._args, control=self._control(),
                                  scratch=self._args[1].parent, timeout=self._timeout,
                                  secrets=self._secrets())
        self.last = result
        if result.ok:
            logger.info("litestream %r: verified: the replica restores to a sound database "
                        "holding every committed transaction (%.1fs)", self._name,
                        result.duration_s)
        else:
            logger.error("litestream %r: verification FAILED: %s", self._name, result.reason)
        self._on_result()
        return result

    async def every(self, interval: float, due: Callable[[], bool]) -> None:
        """The background job of ``verify_interval``: verify whenever ``due()``."""
        while True:
            await anyio.sleep(interval)
            if due():
                await self.verify()

