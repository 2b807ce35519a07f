"""The supervisor: spawn Litestream, wait until it is ready, pump its logs,
restart it when it dies, and stop it without losing a committed row.

The flow, in the order it happens::

    start()      spawn `litestream replicate`, wait for the control socket to
                 answer with our child's pid and list every database
    supervise()  (a task) wait for the child to exit; if nobody asked for it,
                 restart it at once, then with capped exponential backoff; give up
                 (FAILED) after more than max_restarts exits in restart_window
    poll()       (a task) refresh replication positions for the status route
    stop()       POST /sync with wait for every database (the replica has every
                 committed row), then SIGTERM, then SIGKILL past stop_timeout
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ._config import Settings
from ._control import ControlClient, ControlError
from ._exceptions import StartupError, SyncError
from ._status import DatabaseHealth, State, uptime
from ._workdir import CONFIG_NAME, SOCKET_NAME

logger = logging.getLogger("asgi_litestream")

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR}
# Backoff before the n-th consecutive restart: none for the first (back within
# milliseconds), then 0.5 s doubling up to max_backoff.
_FIRST_BACKOFF = 0.5
_READY_POLL = 0.005
_MAX_LINE = 64 * 1024


class Supervisor:
    """Owns one Litestream child process for one LitestreamLifespan."""

    def __init__(
        self, settings: Settings, *, binary: Path, workdir: Path, environ: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.config_path = workdir / CONFIG_NAME
        self.control = ControlClient(workdir / SOCKET_NAME)
        self.state = State.STARTING
        self.pid: int | None = None
        self.version: str | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_errors: deque[str] = deque(maxlen=10)
        self.last_flush_ok: bool | None = None
        self.health = [DatabaseHealth(database=db) for db in settings.databases]
        self._env = settings.child_env(environ)
        self._secrets = settings.secrets()
        self._started_at: float | None = None
        self._process: anyio.abc.Process | None = None
        self._pump_done: dict[int, anyio.Event] = {}
        self._want_running = True
        self._closing = False
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._recent_exits: deque[float] = deque()
        self._task_group: anyio.abc.TaskGroup | None = None

    # -- public surface -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def uptime_s(self) -> float | None:
        return uptime(self._started_at) if self.running else None

    async def start(self) -> None:
        """Spawn Litestream and return once it is ready; a no-op when running.

        Raises StartupError (with Litestream's own error line) if it exits or is
        not ready within ``startup_timeout``; no child is left behind.
        """
        async with self._lock:
            self._want_running = True
            self._recent_exits.clear()
            if self._process is not None:
                return
            self.state = State.STARTING
            try:
                await self._spawn()
            except StartupError:
                self.state = State.FAILED
                raise
            self._wake.set()

    async def stop(self) -> bool:
        """Flush every database to its replica, then stop Litestream.

        The supervisor stays up: :meth:`start` brings Litestream back. Returns
        whether the final flush reached the replica for every database.
        """
        async with self._lock:
            self._want_running = False
            self._wake.set()
            process = self._process
            if process is None:
                if self.state is not State.FAILED:
                    self.state = State.STOPPED
                return True
            self.state = State.STOPPING
            # A cancelled shutdown must still flush and reap the child.
            with anyio.CancelScope(shield=True):
                flushed = await self._flush()
                await self._terminate(process)
            self._process = None
            self.pid = None
            self.state = State.STOPPED
            self.last_flush_ok = flushed
            return flushed

    async def sync(self, *, timeout: float | None = None) -> dict[str, int]:  # noqa: ASYNC109
        """Wait until every database's replica holds everything committed so far.

        Returns ``{path: replicated_txid}``; raises SyncError when Litestream is not
        running or the replica does not catch up within ``timeout``.
        """
        timeout = self.settings.flush_timeout if timeout is None else timeout
        if not self.running:
            raise SyncError(f"Litestream {self.settings.name!r} is {self.state.value}, "
                            "so nothing can reach the replica")
        positions: dict[str, int] = {}
        with anyio.move_on_after(timeout) as scope:
            for db in self.settings.databases:
                if not db.path.exists():
                    continue
                try:
                    result = await self.control.sync(db.path, wait=True, timeout=timeout)
                except ControlError as exc:
                    raise SyncError(f"sync of {db.path} failed: {exc}") from exc
                if not result.caught_up:
                    raise SyncError(f"sync of {db.path} returned before the replica caught "
                                    f"up (txid {result.txid}, replica {result.replicated_txid})")
                positions[str(db.path)] = result.replicated_txid
        if scope.cancelled_caught:
            raise SyncError(f"the replica did not catch up within {timeout}s")
        return positions

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the first Litestream, then supervise and poll in ``task_group``."""
        self._task_group = task_group
        await self.start()
        await self.refresh_health()  # the status route is truthful from the start
        task_group.start_soon(self._supervise)
        task_group.start_soon(self._poll_health)

    async def close(self) -> None:
        """Final stop at shutdown: flush, stop, and release the control client."""
        if self._closing:
            return
        self._closing = True
        try:
            flushed = await self.stop()
            if flushed:
                logger.info("litestream %r: final flush complete; every committed row is "
                            "in the replica", self.settings.name)
            else:
                logger.error("litestream %r: final flush FAILED; the replica may miss the "
                             "latest rows (see the errors above)", self.settings.name)
        finally:
            with anyio.CancelScope(shield=True):
                await self.control.aclose()

    # -- spawning and readiness ----------------------------------------------

    async def _spawn(self) -> None:
        assert self._task_group is not None, "run() sets the task group"
        command = [str(self.binary), "replicate", "-config", str(self.config_path)]
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            # Its own session: a terminal's SIGINT/SIGHUP reaches only us, and we
            # stop Litestream in order (SIGHUP would kill it with no final sync).
            start_new_session=True,
        )
        done = anyio.Event()
        self._pump_done[process.pid] = done
        # Always drain: past ~64 KB of unread output Litestream blocks for good.
        self._task_group.start_soon(self._pump_logs, process, done)
        try:
            with anyio.fail_after(self.settings.startup_timeout):
                await self._wait_ready(process)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._kill(process)
            if isinstance(exc, TimeoutError):
                raise StartupError(
                    f"Litestream did not become ready within {self.settings.startup_timeout}s"
                    f"{self._error_tail()}. Fix: check the replica is reachable, or raise "
                    "startup_timeout"
                ) from None
            if isinstance(exc, _Exited):
                raise StartupError(
                    f"Litestream exited with code {exc.code} during startup"
                    f"{self._error_tail()}"
                ) from None
            raise
        self._process = process
        self.pid = process.pid
        self._started_at = time.monotonic()
        self.state = State.RUNNING
        logger.info("litestream %r: running (pid %d, %s)", self.settings.name, process.pid,
                    ", ".join(str(db.path) for db in self.settings.databases))

    async def _wait_ready(self, process: anyio.abc.Process) -> None:
        """Ready = the control socket is *our* child's and lists every database."""
        wanted = {str(db.path) for db in self.settings.databases}
        while True:
            if process.returncode is not None:
                await self._drain(process)
                raise _Exited(process.returncode)
            try:
                info = await self.control.info()
                if info.get("pid") == process.pid:
                    listed = {d.get("path") for d in await self.control.databases()}
                    if wanted <= listed:
                        self.version = info.get("version")
                        return
            except ControlError:
                pass  # socket not up yet
            await anyio.sleep(_READY_POLL)

    # -- supervision -----------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._closing:
            process = self._process
            if process is None:
                if self._want_running:
                    await self._restart_after_backoff()
                else:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                continue
            code = await process.wait()
            if self._process is not process:
                continue  # stop() took it down on purpose and reaped it
            await self._drain(process)
            await process.aclose()
            self._process = None
            self.pid = None
            if self._want_running and not self._closing:
                self._record_exit(code)

    def _record_exit(self, code: int | None) -> None:
        self.last_exit_code = code
        now = time.monotonic()
        self._recent_exits.append(now)
        while self._recent_exits and now - self._recent_exits[0] > self.settings.restart_window:
            self._recent_exits.popleft()
        if len(self._recent_exits) > self.settings.max_restarts:
            self._want_running = False
            self.state = State.FAILED
            logger.error(
                "litestream %r: exited %d times within %ss (last code %s); staying down. "
                "Replication is OFF. Fix the cause%s, then call start_litestream(%r)",
                self.settings.name, len(self._recent_exits), self.settings.restart_window,
                code, self._error_tail(), self.settings.name,
            )
            return
        self.state = State.RESTARTING
        logger.warning("litestream %r: exited unexpectedly with code %s%s; restarting",
                       self.settings.name, code, self._error_tail())

    async def _restart_after_backoff(self) -> None:
        attempt = len(self._recent_exits)
        delay = 0.0 if attempt <= 1 else min(
            _FIRST_BACKOFF * 2 ** (attempt - 2), self.settings.max_backoff
        )
        if delay:
            self._wake = anyio.Event()
            with anyio.move_on_after(delay):
                await self._wake.wait()  # stop() or shutdown cuts the wait short
        async with self._lock:
            if self._process is not None or not self._want_running or self._closing:
                return
            self.restarts += 1
            try:
                await self._spawn()
            except StartupError as exc:
                logger.warning("litestream %r: restart failed: %s", self.settings.name, exc)
                self._record_exit(self.last_exit_code)

    # -- stopping ----------------------------------------------------------------

    async def _flush(self) -> bool:
        """POST /sync with wait: True once every replica holds every committed txid."""
        ok = True
        for db in self.settings.databases:
            if not db.path.exists():
                continue  # nothing was ever written, so nothing can be lost
            try:
                with anyio.fail_after(self.settings.flush_timeout + 2):
                    result = await self.control.sync(
                        db.path, wait=True, timeout=self.settings.flush_timeout
                    )
            except (ControlError, TimeoutError) as exc:
                ok = False
                logger.error("litestream %r: final flush of %s failed: %s",
                             self.settings.name, db.path, exc or "timed out")
                continue
            if result.caught_up:
                logger.info("litestream %r: flushed %s (replica at txid %d)",
                            self.settings.name, db.path, result.replicated_txid)
            else:
                ok = False
                logger.error("litestream %r: final flush of %s incomplete: txid %d, replica %d",
                             self.settings.name, db.path, result.txid, result.replicated_txid)
        return ok

    async def _terminate(self, process: anyio.abc.Process) -> None:
        """SIGTERM (Litestream syncs once more), SIGKILL only past stop_timeout."""
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(self.settings.stop_timeout):
                await process.wait()
            if process.returncode is None:
                logger.warning("litestream %r: did not stop within %ss; killing it",
                               self.settings.name, self.settings.stop_timeout)
        await self._kill(process)

    async def _kill(self, process: anyio.abc.Process) -> None:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await self._drain(process)
        await process.aclose()

    # -- logs -------------------------------------------------------------------

    async def _pump_logs(self, process: anyio.abc.Process, done: anyio.Event) -> None:
        assert process.stdout is not None
        pending = b""
        try:
            async for chunk in process.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._log_line(line, process.pid)
                if len(pending) > _MAX_LINE:
                    self._log_line(pending, process.pid)
                    pending = b""
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            if pending:
                self._log_line(pending, process.pid)
            done.set()

    async def _drain(self, process: anyio.abc.Process) -> None:
        """Wait (briefly) until the exited child's last lines are logged."""
        done = self._pump_done.pop(process.pid, None)
        if done is not None:
            with anyio.move_on_after(1):
                await done.wait()

    def _log_line(self, raw: bytes, pid: int) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        for secret in self._secrets:
            text = text.replace(secret, "***")
        level, message = parse_log_line(text)
        logger.log(level, "litestream[%d]: %s", pid, message)
        if level >= logging.WARNING:
            self.last_errors.append(message)

    def _error_tail(self) -> str:
        return f": {self.last_errors[-1]}" if self.last_errors else ""

    # -- health -----------------------------------------------------------------

    async def _poll_health(self) -> None:
        while not self._closing:
            await anyio.sleep(self.settings.health_interval)
            if self.running:
                await self.refresh_health()

    async def refresh_health(self) -> None:
        """Ask Litestream for every database's local and replicated position."""
        try:
            listed = {d.get("path"): d for d in await self.control.databases()}
        except ControlError as exc:
            listed = {}
            for health in self.health:
                health.error = str(exc)
        now = time.monotonic()
        for health in self.health:
            path = health.database.path
            entry = listed.get(str(path), {})
            health.litestream_status = entry.get("status")
            health.last_sync_at = entry.get("last_sync_at") or health.last_sync_at
            if not path.exists():
                health.txid = health.replicated_txid = 0
                health.caught_up_at, health.error, health.polled_at = now, None, now
                continue
            try:
                result = await self.control.sync(path, wait=False, timeout=5)
            except ControlError as exc:
                health.error = str(exc)
                continue
            health.txid, health.replicated_txid = result.txid, result.replicated_txid
            if result.caught_up:
                health.caught_up_at = now
            health.error, health.polled_at = None, now

    def status(self) -> dict[str, Any]:
        """The status route's JSON: only values held in memory."""
        now = time.monotonic()
        databases = [h.to_json(now, self._max_lag_seconds) for h in self.health]
        return {
            "name": self.settings.name,
            "status": "running" if self.running else "down",
            "state": self.state.value,
            "healthy": self.running and all(d["healthy"] for d in databases),
            "pid": self.pid,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_errors": list(self.last_errors),
            "last_flush_ok": self.last_flush_ok,
            "version": self.version,
            "databases": databases,
        }

    @property
    def _max_lag_seconds(self) -> float:
        # A replica may trail by a few sync intervals before that means trouble.
        return max(10 * self.settings.sync_interval, 3 * self.settings.health_interval, 10.0)


class _Exited(Exception):
    def __init__(self, code: int | None) -> None:
        self.code = code


def parse_log_line(text: str) -> tuple[int, str]:
    """Litestream's JSON log line → (logging level, "msg key=value ...")."""
    if text.startswith("{"):
        try:
            # Litestream repeats keys (a compaction "level" after the log level):
            # keep the first of each.
            record = json.loads(text, object_pairs_hook=_first_wins)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = _LEVELS.get(str(record.pop("level", "")).upper(), logging.INFO)
            record.pop("time", None)
            message = str(record.pop("msg", ""))
            fields = " ".join(f"{k}={_field(v)}" for k, v in record.items())
            return level, f"{message} {fields}".strip()
    lowered = text.lower()
    if lowered.startswith(("error", "panic", "fatal")):
        return logging.ERROR, text
    return logging.INFO, text


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        record.setdefault(key, value)
    return record


def _field(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text) if " " in text else text
