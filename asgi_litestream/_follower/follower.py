"""Read replicas ("followers"): a local, read-only copy of each database that follows
the primary's replica with `litestream restore -f`. A follower never replicates and
never writes to the replica.

Restarts: resuming over an existing copy fails whenever the copy is newer than the
replica's latest snapshot (nearly always: "saved TXID ... is ahead of latest
snapshot"). The follower then restores a fresh copy under a temporary name while the
old one is still read, and renames it over the old one (Litestream keeps following the
renamed file). Connections opened before read the old file until closed: open one per
request, or reopen when the status' ``generation`` changes. One follower per copy.

Reading the copy (locks, WAL mode, page cache) is in ``_follower/copy.py``, how far it
trails its replica in ``_follower/lag.py``, one `restore -f` process in
``_follower/process.py``; several databases at once in ``_follower/group.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from .._config.databases import Database
from .._exceptions import StartupError
from .._litestream.logs import LitestreamLog, scrub
from .._litestream.process import REAP_LIMIT, pump_lines
from .._litestream.restart import GiveUp, RestartPolicy
from .copy import (
    _in_wal_mode,
    _publish,
    _remove_restore_files,
    _replace_if_exists,
    _txid_path,
)
from .lag import FollowerStatus, Lag, ProbeError, probe_head
from .process import (
    _Attempt,
    _hex,
    follow_command,
    lasting_failure,
    parse_text_record,
    resume_refused,
    stop_process,
)

logger = logging.getLogger("asgi_litestream")

_EMPTY_RETRY = 1.0  # seconds between two looks at a replica that holds no backup yet
_WAIT_LOG_EVERY = 10.0


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
        on_fresh_copy: Callable[[Path], Awaitable[None]] | None = None,
        on_update: Callable[[Path], Awaitable[None]] | None = None,
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
        # Told after a fresh copy replaced the old file: connections opened before
        # still read the old, deleted file (the middleware disposes the app's pools).
        self._on_fresh_copy = on_fresh_copy
        self._on_update = on_update

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
        """True once the first copy is in place; False after ``timeout`` seconds.
        Raises StartupError when following stopped for good before that."""
        with anyio.move_on_after(timeout):
            while not self.ready:
                if self._gave_up is not None:
                    raise StartupError(self._gave_up)
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
                    self.grace + 2 * REAP_LIMIT):
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
            lasting = lasting_failure(attempt, ever_ready=self.ready or self.generation > 0)
            if lasting is not None:
                self._gave_up = (f"cannot follow {self.database.replica}: {lasting.cause}. "
                                 f"Fix: {lasting.fix} ({lasting.detail})")
                logger.error("%s %s; not retried: no restart can mend this", label,
                             self._gave_up)
                self._notify()
                await anyio.sleep_forever()
                continue
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
                task_group.start_soon(pump_lines, process, functools.partial(
                    self._line, pid=process.pid, attempt=attempt), pumped)
                attempt.code = await process.wait()
                with anyio.move_on_after(REAP_LIMIT):
                    await pumped.wait()
                task_group.cancel_scope.cancel()
        finally:
            await stop_process(process, grace=self.grace, name=self.name, path=self.path)
            if fresh and attempt.published:
                # Its position moves beside the copy, where a resume looks for it.
                _replace_if_exists(_txid_path(self._temp), _txid_path(self.path))
            elif fresh:
                _remove_restore_files(self._temp)
        return attempt

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
                if self._on_fresh_copy is not None:
                    with anyio.CancelScope(shield=True):
                        await self._on_fresh_copy(self.path)
            elif not self.ready:
                logger.info("litestream %r: resumed following %s at txid %s", self.name,
                            self.path, txid)
            self.ready = True
            self._set_txid(txid)
        elif message == "follow: applied updates":
            self.error = None
            if self._on_update is not None:
                # Litestream writes the primary's pages in place, and a WAL-mode
                # primary's page 1 keeps its change counter: a connection held open
                # keeps its page cache and never sees these rows. Drop the pools first.
                with anyio.CancelScope(shield=True):
                    await self._on_update(self.path)
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
        try:
            await self.wait_ready(float("inf"))
        except StartupError:
            return  # following stopped for good: nothing to probe
        while True:
            await self.probe()
            await anyio.sleep(self.health_interval)
