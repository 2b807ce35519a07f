"""Read replicas ("followers"): a local, read-only copy of each database that follows
the primary's replica with `litestream restore -f`. A follower never replicates and
never writes to the replica.

Readers of the copy (measured with Litestream 0.5.17; ``replica.go`` ``applyLTXFile``):
Litestream writes each update into the copy under SQLite's own EXCLUSIVE lock, so a
read transaction never sees a torn page; a reader starting meanwhile waits (busy_timeout).
Keep read transactions short: one left open holds every update back, and readers in
other processes then get "database is locked". The first restore leaves the header in
WAL mode, where every open connection holds a shared lock and follow blocks for good
(SIGTERM cannot stop it then): the follower switches it to rollback mode before it
publishes the copy. The change counter moves only when an update touches page 1, so a
connection keeping its page cache reads stale pages: use :func:`connect_readonly`.

Restarts: resuming over an existing copy fails whenever the copy is newer than the
replica's latest snapshot (nearly always: "saved TXID ... is ahead of latest
snapshot"). The follower then restores a fresh copy under a temporary name while the
old one is still read, and renames it over the old one (Litestream keeps following the
renamed file). Connections opened before read the old file until closed: open one per
request, or reopen when the status' ``generation`` changes. One follower per copy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import anyio.to_thread

from ._child import _PDEATHSIG_EXEC, _setpriv
from ._databases import Database
from ._logs import LitestreamLog, scrub
from ._restart import GiveUp, RestartPolicy

logger = logging.getLogger("asgi_litestream")

_MAX_LINE = 64 * 1024
# After SIGKILL the kernel reaps at once; this only bounds the wait for the last
# log lines, so that closing can never hang.
_REAP_LIMIT = 2.0
_EMPTY_RETRY = 1.0  # seconds between two looks at a replica that holds no backup yet
_WAIT_LOG_EVERY = 10.0
_MAX_FIRST_SEEN = 1024
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
_LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
# A row of `litestream ltx`: level, min_txid, max_txid, size, created.
_LTX_ROW = re.compile(r"^\s*(\d+)\s+([0-9a-f]{16})\s+([0-9a-f]{16})\s", re.MULTILINE)
# One key=value of Go's slog text format (values with spaces are Go-quoted).
_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


# -- pure pieces: commands, Litestream's output, lag ------------------------------------


def follow_command(binary: Path, output: Path, source: Sequence[str], *,
                   interval: float) -> list[str]:
    """`litestream restore -f` into ``output``, from ``source`` (a replica URL, or
    ``-config FILE DB_PATH``), wrapped on Linux like ``replicate_command``: the kernel
    sends it SIGTERM if the app dies without stopping it."""
    command = [str(binary), "restore", "-f", "-if-replica-exists",
               "-follow-interval", _duration(interval), "-o", str(output), *source]
    if not sys.platform.startswith("linux"):
        return command
    setpriv = _setpriv()
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--", *command]
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *command]


def parse_text_record(text: str) -> dict[str, str] | None:
    """One line of Litestream's slog output as a dict: text (``time=… level=INFO
    msg="…" k=v``), or JSON (``logging: {type: json}``, as our generated config asks);
    None for anything else (``Error: …`` on exit, a panic)."""
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in found.items()}
    if not text.startswith("time="):
        return None
    record: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                value = value[1:-1]
        record.setdefault(key, value)
    return record


def resume_refused(line: str) -> bool:
    """Litestream refused to go on following over the existing copy (its position is
    missing, unreadable, or not reachable from the replica's latest snapshot): only a
    fresh restore helps. A replica that could not be listed is no such verdict."""
    return "cannot resume follow mode" in line or "read txid file for crash recovery" in line


def head_from_names(names: Iterable[str]) -> int | None:
    """The highest txid among level-0 LTX file names (``<min hex16>-<max hex16>.ltx``);
    None when there is none (the replica holds nothing yet)."""
    found = [int(m.group(2), 16) for m in map(_LTX_NAME.match, names) if m]
    return max(found, default=None)


def head_from_ltx_listing(text: str) -> int | None:
    """The highest level-0 txid in the output of `litestream ltx -level 0` (a table
    ``level min_txid max_txid size created``, maybe among log lines); None if empty."""
    found = [int(m.group(3), 16) for m in _LTX_ROW.finditer(text) if m.group(1) == "0"]
    return max(found, default=None)


class Lag:
    """How far a copy trails its replica: transactions, and seconds since a probe first
    saw the oldest replica transaction the copy does not hold yet. Probes are at most
    one ``health_interval`` apart, so it is exact to that interval."""

    def __init__(self) -> None:
        self.replica_txid: int | None = None
        self.known = False  # False before the first probe and after a failed one
        self._first_seen: list[tuple[int, float]] = []  # (head txid, monotonic), rising

    def observe(self, head: int | None, copy_txid: int | None, now: float) -> None:
        """Record one successful probe: the replica's head was ``head`` at ``now``."""
        self.known = True
        if head is None or (self.replica_txid is not None and head < self.replica_txid):
            self._first_seen.clear()  # empty, or a replica started over
        self.replica_txid = head
        if head is not None and (not self._first_seen or head > self._first_seen[-1][0]):
            self._first_seen.append((head, now))
        if copy_txid is not None:
            self._first_seen = [e for e in self._first_seen[:-1] if e[0] > copy_txid] + \
                self._first_seen[-1:]
        if len(self._first_seen) > _MAX_FIRST_SEEN:
            # Merge the two oldest, keeping the older time: overstates, never hides, lag.
            (_, seen), (head1, _) = self._first_seen[:2]
            self._first_seen[:2] = [(head1, seen)]

    def failed(self) -> None:
        """A probe failed: the lag is unknown until the next one succeeds."""
        self.known = False

    def measure(self, copy_txid: int | None, now: float) -> tuple[int | None, float | None]:
        """(transactions behind, seconds behind); (None, None) when unknown."""
        if not self.known or self.replica_txid is None or copy_txid is None:
            return None, None
        behind = max(self.replica_txid - copy_txid, 0)
        for head, seen in self._first_seen:
            if head > copy_txid:
                return behind, max(now - seen, 0.0)
        return behind, 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowerStatus:
    """One follower, as the status route shows it."""

    path: str
    replica: str  # credentials redacted
    ready: bool  # a copy restored (or resumed) by this follower is in place
    copy_txid: int | None
    replica_txid: int | None
    behind_txns: int | None
    behind_s: float | None
    healthy: bool  # ready, and behind_s <= max_lag
    restarts: int
    last_exit_code: int | None
    error: str | None
    pid: int | None
    generation: int  # fresh copies renamed into place: reopen connections when it moves

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


# -- the mechanism: one database ---------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    """What one `restore -f` process did, as its output told."""

    fresh: bool
    output: Path
    entered_at: float | None = None  # monotonic time it entered follow mode
    published: bool = False
    empty: bool = False  # exited because the replica holds no backup yet
    refused: str | None = None  # why it would not resume over the copy
    final_error: str | None = None
    code: int | None = None


class Follower:
    """Follows one database: keeps a read-only copy at ``database.path``, restarted
    (with backoff) when Litestream exits, re-restored when it cannot resume.

    ``env`` is Litestream's environment (``Settings.child_env``: no AWS_CA_BUNDLE).
    ``config_path``, a Litestream config listing ``database.path``, names the replica
    instead of its URL (a password stays out of argv); databases read from a user's
    litestream.yml need it. ``interval`` is Litestream's ``-follow-interval``.
    """

    def __init__(
        self, binary: Path, database: Database, *, env: Mapping[str, str],
        log: LitestreamLog, name: str = "follower", config_path: Path | None = None,
        policy: RestartPolicy | None = None, interval: float = 1.0,
        health_interval: float = 2.0, max_lag: float = 10.0, probe_timeout: float = 10.0,
        grace: float = 1.0, secrets: Sequence[str] = (),
    ) -> None:
        for option, value in (("interval", interval), ("health_interval", health_interval),
                              ("max_lag", max_lag), ("probe_timeout", probe_timeout)):
            if not value > 0:
                raise ValueError(f"{option}={value!r} must be a number of seconds above 0")
        self.binary = binary
        self.database = database
        self.path = database.path
        self.name = name
        self.interval = interval
        self.health_interval = health_interval
        self.max_lag = max_lag
        self.probe_timeout = probe_timeout
        self.grace = grace
        self._env = dict(env)
        self._log = log
        self._secrets = tuple(secrets)
        self._config_path = config_path
        self._policy = policy or RestartPolicy(max_restarts=5, restart_window=60.0,
                                               max_backoff=30.0)
        # Beside the copy, hidden; Litestream adds ".tmp" and "-txid" to it.
        self._temp = self.path.with_name(f".{self.path.name}.follower")
        self.ready = False
        self.copy_txid: int | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.generation = 0
        self.error: str | None = None  # Litestream's last error line since progress
        self._gave_up: str | None = None
        self._probe_error: str | None = None
        self._lag = Lag()
        self._process: anyio.abc.Process | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self._resume_refused = False

    def __repr__(self) -> str:
        return f"Follower(path={str(self.path)!r}, replica={self.database.replica!r})"

    # -- what the app asks --

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def holds(self, txid: int) -> bool:
        """The copy holds transaction ``txid`` (and every one before it)."""
        return self.ready and self.copy_txid is not None and self.copy_txid >= txid

    async def wait_for(self, txid: int, timeout: float) -> bool:
        """True once the copy holds ``txid`` (the primary's position after a write:
        read-your-writes); False after ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while not self.holds(txid):
                await self._change().wait()
        return self.holds(txid)

    async def wait_ready(self, timeout: float) -> bool:
        """True once the first copy is in place; False after ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while not self.ready:
                await self._change().wait()
        return self.ready

    def status(self, max_lag: float | None = None) -> FollowerStatus:
        limit = self.max_lag if max_lag is None else max_lag
        behind_txns, behind_s = self._lag.measure(self.copy_txid, time.monotonic())
        if not self.ready:
            behind_txns = behind_s = None
        replica_txid = self._lag.replica_txid if self._lag.known else None
        if replica_txid is not None and self.copy_txid is not None:
            # The replica holds at least what the copy got from it since the last probe.
            replica_txid = max(replica_txid, self.copy_txid)
        return FollowerStatus(
            path=str(self.path), replica=self.database.replica, ready=self.ready,
            copy_txid=self.copy_txid, replica_txid=replica_txid, behind_txns=behind_txns,
            behind_s=None if behind_s is None else round(behind_s, 3),
            healthy=self.ready and behind_s is not None and behind_s <= limit,
            restarts=self.restarts, last_exit_code=self.last_exit_code,
            error=self._gave_up or self._probe_error or self.error, pid=self.pid,
            generation=self.generation)

    # -- lifecycle --

    async def run(self) -> None:
        """Follow until cancelled (or :meth:`aclose`); the child never outlives it."""
        self._finished = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._probe_loop)
                    await self._follow()
        finally:
            self._scope = None
            self._finished.set()

    async def aclose(self) -> None:
        """Stop following: SIGTERM, SIGKILL past ``grace``, reap. Never hangs (a
        Litestream blocked on a reader's lock ignores SIGTERM)."""
        if self._scope is not None:
            self._scope.cancel()
        if self._finished is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(
                    self.grace + 2 * _REAP_LIMIT):
                await self._finished.wait()

    async def probe(self) -> None:
        """Ask the replica for its head once and update the lag."""
        try:
            head = await probe_head(self.binary, self.database, self._env,
                                    config_path=self._config_path,
                                    timeout=self.probe_timeout, secrets=self._secrets)
        except (OSError, TimeoutError, ProbeError) as exc:
            self._lag.failed()
            self._probe_error = (f"cannot read the replica's position: "
                                 f"{exc or type(exc).__name__}")
            return
        self._probe_error = None
        self._lag.observe(head, self.copy_txid, time.monotonic())

    # -- inside --

    async def _follow(self) -> None:
        label = f"litestream {self.name!r}:"
        fresh = not self.path.exists()
        if not fresh and await _in_wal_mode(self.path):
            logger.info("%s the copy %s is in WAL mode (not made by a follower): restoring "
                        "a fresh copy beside it", label, self.path)
            fresh = True
        waiting_since: float | None = None
        logged_at = 0.0
        while True:
            if fresh and waiting_since is None:
                logger.info("%s restoring a read-only copy of %s from %s", label,
                            self.path, self.database.replica)
            attempt = await self._attempt(fresh)
            now = time.monotonic()
            if attempt.refused is not None:
                logger.info("%s cannot resume following %s (%s): restoring a fresh copy "
                            "beside it; the old copy is read until it is replaced", label,
                            self.path, attempt.refused)
                self._resume_refused = fresh = True
                continue
            if attempt.empty:
                if waiting_since is None:
                    waiting_since = logged_at = now
                    logger.info("%s %s holds no backup yet: waiting for the primary's first "
                                "sync (checking every %gs)", label, self.database.replica,
                                _EMPTY_RETRY)
                elif now - logged_at >= _WAIT_LOG_EVERY:
                    logged_at = now
                    logger.info("%s still no backup in %s (%.0fs)", label,
                                self.database.replica, now - waiting_since)
                await anyio.sleep(_EMPTY_RETRY)
                continue
            waiting_since = None
            self.last_exit_code = attempt.code
            ran_for = None if attempt.entered_at is None else now - attempt.entered_at
            decision = self._policy.on_exit(at=now, ran_for=ran_for)
            reason = f": {attempt.final_error}" if attempt.final_error else ""
            if isinstance(decision, GiveUp):
                self._gave_up = (f"following stopped: Litestream exited {decision.exits} "
                                 f"times within {self._policy.restart_window:g}s (last exit "
                                 f"code {attempt.code}{reason})")
                logger.error("%s %s; the copy %s is no longer updated", label,
                             self._gave_up, self.path)
                self._notify()
                await anyio.sleep_forever()
                continue
            logger.warning("%s the follower of %s exited with code %s%s; restarting it in "
                           "%.1fs", label, self.path, attempt.code, reason, decision.delay)
            await anyio.sleep(decision.delay)
            self.restarts += 1
            fresh = self._resume_refused or not self.path.exists()

    async def _attempt(self, fresh: bool) -> _Attempt:
        """Run one `restore -f` until it exits; fresh: into the temporary name, renamed
        over the copy once restored."""
        output = self._temp if fresh else self.path
        attempt = _Attempt(fresh=fresh, output=output)
        if fresh:
            _remove_restore_files(self._temp)
        command = follow_command(self.binary, output, self._source(), interval=self.interval)
        try:
            process = await anyio.open_process(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=self._env,
                # Its own session: a terminal's SIGINT reaches only us (see _child).
                start_new_session=True)
        except OSError as exc:
            attempt.final_error = f"could not start {command[0]}: {exc}"
            return attempt
        self._process = process
        try:
            async with anyio.create_task_group() as task_group:
                pumped = anyio.Event()
                # Always drain: past ~64 KB of unread output Litestream blocks for good.
                task_group.start_soon(self._pump, process, attempt, pumped)
                attempt.code = await process.wait()
                with anyio.move_on_after(_REAP_LIMIT):
                    await pumped.wait()
                task_group.cancel_scope.cancel()
        finally:
            await self._stop(process)
            if fresh and attempt.published:
                # Its position moves beside the copy, where a resume looks for it.
                _replace_if_exists(_txid_path(self._temp), _txid_path(self.path))
            elif fresh:
                _remove_restore_files(self._temp)
        return attempt

    async def _stop(self, process: anyio.abc.Process) -> None:
        """SIGTERM, SIGKILL past ``grace``, reap: runs to the end, within one deadline."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + _REAP_LIMIT):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(self.grace):
                    await process.wait()
                if process.returncode is None:
                    logger.warning("litestream %r: the follower of %s did not stop within "
                                   "%gs; killing it", self.name, self.path, self.grace)
                    process.kill()
            await process.wait()
            await process.aclose()

    async def _pump(self, process: anyio.abc.Process, attempt: _Attempt,
                    pumped: anyio.Event) -> None:
        stdout = process.stdout
        assert stdout is not None
        pending = b""
        try:
            async for chunk in stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    await self._line(line, process.pid, attempt)
                if len(pending) > _MAX_LINE:
                    await self._line(pending, process.pid, attempt)
                    pending = b""
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            if pending:
                with anyio.CancelScope(shield=True):
                    await self._line(pending, process.pid, attempt)
            pumped.set()

    async def _line(self, raw: bytes, pid: int, attempt: _Attempt) -> None:
        """Act on one line of Litestream's output, and log it (scrubbed, at its level)."""
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        record = parse_text_record(text)
        if record is None:
            if resume_refused(text):
                # Handled: our own line says what happens next.
                reason = text.removeprefix("Error: ").removeprefix("cannot resume follow mode: ")
                attempt.refused = reason.split(";")[0]
                return
            self._log.line(raw, pid)
            if text.startswith("Error:"):
                attempt.final_error = self._last_error(text)
            return
        message = record.get("msg", "")
        if message == "no matching backups found":
            attempt.empty = True
            return  # once a second while waiting: our own line says it, now and then
        # Re-encoded as JSON, the log gets its level (and scrubs it as ever).
        self._log.line(json.dumps(record).encode(), pid)
        if record.get("level") in ("ERROR", "WARN"):
            self.error = self._last_error(text)
        if message == "entering follow mode":
            attempt.entered_at = time.monotonic()
            txid = _hex(record.get("txid"))
            if attempt.fresh:
                with anyio.CancelScope(shield=True):  # renamed means published
                    await anyio.to_thread.run_sync(_publish, self._temp, self.path)
                    attempt.published, self._resume_refused = True, False
                    self.generation += 1
                logger.info("litestream %r: restored a copy of %s at txid %s; following "
                            "%s", self.name, self.path, txid, self.database.replica)
            elif not self.ready:
                logger.info("litestream %r: resumed following %s at txid %s", self.name,
                            self.path, txid)
            self.ready = True
            self._set_txid(txid)
        elif message == "follow: applied updates":
            self.error = None
            self._set_txid(_hex(record.get("to_txid")))

    def _last_error(self, fallback: str) -> str:
        errors = self._log.last_errors
        return errors[-1] if errors else scrub(fallback, self._secrets)

    def _set_txid(self, txid: int | None) -> None:
        if txid is not None:
            self.copy_txid = txid
        self._notify()

    def _change(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _source(self) -> list[str]:
        # Through the config file when there is one: a password in the URL then stays
        # in the environment, out of the process list.
        if self._config_path is not None:
            return ["-config", str(self._config_path), str(self.path)]
        return [self.database.replica_url]

    async def _probe_loop(self) -> None:
        await self.wait_ready(float("inf"))
        while True:
            await self.probe()
            await anyio.sleep(self.health_interval)


# -- the replica's head -------------------------------------------------------------------


class ProbeError(Exception):
    """The replica's position could not be read."""


async def probe_head(binary: Path, database: Database, env: Mapping[str, str], *,
                     config_path: Path | None = None, timeout: float = 10.0,
                     secrets: Sequence[str] = ()) -> int | None:
    """The latest level-0 txid on the replica (None: it holds nothing). A file replica
    is listed directly; any other is asked with `litestream ltx -level 0`."""
    folder = _file_replica_dir(database)
    if folder is not None:
        names = await anyio.to_thread.run_sync(_list_names, folder / "ltx" / "0")
        return head_from_names(names)
    source = (["-config", str(config_path), str(database.path)] if config_path is not None
              else [database.replica_url])
    with anyio.fail_after(timeout):
        result = await anyio.run_process([str(binary), "ltx", "-level", "0", *source],
                                         env=dict(env), check=False,
                                         stdin=subprocess.DEVNULL)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        lines = output.strip().splitlines()
        raise ProbeError(scrub(lines[-1], secrets) if lines else
                         f"litestream ltx exited with code {result.returncode}")
    return head_from_ltx_listing(output)


def _file_replica_dir(database: Database) -> Path | None:
    config = database.replica_config
    if config is not None and not isinstance(config.get("url"), str):
        path = config.get("path")
        return Path(path) if config.get("type") == "file" and isinstance(path, str) else None
    parts = urlsplit(database.replica_url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and "$" not in parts.path:
        return Path(unquote(parts.path))
    return None


def _list_names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


# -- files ----------------------------------------------------------------------------------


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


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    """A Go duration (``-follow-interval``), to the millisecond."""
    return f"{max(round(seconds * 1000), 1)}ms"


# -- several databases ----------------------------------------------------------------------


class FollowerSet:
    """One :class:`Follower` per database, run as an anyio service:
    ``await task_group.start(followers.serve)``, then ``await followers.close()``."""

    def __init__(
        self, binary: Path, databases: Sequence[Database], *, env: Mapping[str, str],
        log: LitestreamLog, name: str = "follower", config_path: Path | None = None,
        policy: Callable[[], RestartPolicy] | None = None, interval: float = 1.0,
        health_interval: float = 2.0, max_lag: float = 10.0, probe_timeout: float = 10.0,
        grace: float = 1.0, secrets: Sequence[str] = (),
    ) -> None:
        self.max_lag = max_lag
        self.followers = tuple(
            Follower(binary, db, env=env, log=log, name=name, config_path=config_path,
                     policy=policy() if policy else None, interval=interval,
                     health_interval=health_interval, max_lag=max_lag,
                     probe_timeout=probe_timeout, grace=grace, secrets=secrets)
            for db in databases)
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    @property
    def ready(self) -> bool:
        """Every copy is in place."""
        return all(f.ready for f in self.followers)

    def healthy(self, max_lag: float | None = None) -> bool:
        """Every copy is in place and trails its replica by at most ``max_lag`` s."""
        return all(f.status(max_lag).healthy for f in self.followers)

    def snapshot(self, max_lag: float | None = None) -> list[dict[str, Any]]:
        return [f.status(max_lag).to_json() for f in self.followers]

    def follower(self, path: str | os.PathLike[str]) -> Follower:
        wanted = Path(path).expanduser().absolute()
        for follower in self.followers:
            if follower.path == wanted:
                return follower
        raise KeyError(f"{str(wanted)!r} is not followed here; the copies are "
                       f"{', '.join(str(f.path) for f in self.followers)}")

    async def wait_for(self, path: str | os.PathLike[str], txid: int, timeout: float) -> bool:
        """True once the copy at ``path`` holds ``txid``; False after ``timeout`` s."""
        return await self.follower(path).wait_for(txid, timeout)

    async def wait_ready(self, timeout: float) -> bool:
        """True once every copy is in place; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for follower in self.followers:
            await follower.wait_ready(max(deadline - time.monotonic(), 0))
        return self.ready

    async def serve(self, *, task_status: anyio.abc.TaskStatus[FollowerSet] =
                    anyio.TASK_STATUS_IGNORED) -> None:
        """Follow every database until :meth:`close` (or cancellation)."""
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as task_group:
                self._scope = task_group.cancel_scope
                for follower in self.followers:
                    task_group.start_soon(follower.run)
                task_status.started(self)
        finally:
            self._scope = None
            self._stopped.set()

    async def close(self) -> None:
        """Stop every follower and reap its Litestream. Bounded: never hangs."""
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            with anyio.CancelScope(shield=True):
                await self._stopped.wait()
