"""The supervisor: lead or stand by, spawn Litestream, wait until it is ready, pump
its logs, restart it when it dies, and stop it without losing a committed row.

The flow, in the order it happens::

    run()        join the database's workers; take its leader lock, or stand by
                 (another worker runs Litestream; see _leader.py)
      _lead()    restore missing databases from their replicas, then start()
      start()    spawn `litestream replicate`, wait until the control socket
                 answers with our child's pid and lists every database
    _supervise() (task) when the child exits unasked, restart it at once, then
                 with capped exponential backoff; more than max_restarts exits in
                 restart_window → FAILED, down until start_litestream()
    _watch()     (task) a standby takes the leader lock as soon as it is free
    _poll()      (task) refresh replication positions for the status route
    close()      wait for the other workers to stop writing, then stop():
                 POST /sync with wait for every database, SIGTERM, SIGKILL past
                 stop_timeout
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from ._config import Settings
from ._control import ControlClient, ControlError
from ._exceptions import StartupError, SyncError
from ._group_sync import GroupSync
from ._leader import Leadership
from ._logs import parse_log_line, scrub
from ._restore import restore_database
from ._status import DatabaseHealth, Role, State, overall_health, uptime
from ._workdir import CONFIG_NAME, SOCKET_NAME

logger = logging.getLogger("asgi_litestream")

# Backoff before the n-th consecutive restart: none for the first (back within
# milliseconds), then 0.5 s doubling up to max_backoff.
_FIRST_BACKOFF = 0.5
_STABLE_AFTER = 10.0
_READY_POLL = 0.002
_LOCK_POLL = 0.1
_MAX_LINE = 64 * 1024
# How long a leader waits at shutdown for the other workers to stop writing.
_MAX_HANDOVER_WAIT = 5.0
# How long a standby at shutdown looks for the leader to start stopping too.
_LEADER_STOP_GRACE = 1.0

# Exec'd by the current interpreter when `setpriv` is missing: ask the kernel to
# SIGTERM Litestream when its parent dies, then become Litestream (same pid, so
# signals and the control socket's pid check are unchanged).
_PDEATHSIG_EXEC = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) or os.getppid() != int(sys.argv[1]):
    os._exit(70)
os.execv(sys.argv[2], sys.argv[2:])
"""


class Supervisor:
    """Owns Litestream for one LitestreamLifespan in one worker process."""

    def __init__(
        self, settings: Settings, *, binary: Path, workdir: Path, environ: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.config_path = workdir / CONFIG_NAME
        self.control = ControlClient(workdir / SOCKET_NAME)
        self.leadership = Leadership(settings.databases)
        self.role: Role | None = None
        self.state = State.STARTING
        self.pid: int | None = None
        self.version: str | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_errors: deque[str] = deque(maxlen=10)
        self.last_flush_ok: bool | None = None
        self.leader: dict[str, Any] = {}  # what the leading worker published
        self.health = [DatabaseHealth(database=db) for db in settings.databases]
        self._env = settings.child_env(environ)
        self._secrets = tuple(settings.secrets())
        self._command = self._replicate_command()
        self._started_at: float | None = None
        self._process: anyio.abc.Process | None = None
        self._pump_done: dict[int, anyio.Event] = {}
        self._leader_control: ControlClient | None = None
        self._leader_ok = False
        self._want_running = True
        self._closing = False
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._recent_exits: deque[float] = deque()
        self._crashes_in_a_row = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._group_syncs: dict[Path, GroupSync] = {}
        self._changes = 0  # bumped when polled positions or error lines change

    # -- public surface -----------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the databases are being replicated, by us or by the leader."""
        if self.role is Role.STANDBY:
            return self._leader_ok
        return self.state is State.RUNNING

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """Startup: lead (restore, spawn, ready) or find the leader ready; then keep
        supervising in ``task_group``. Raises StartupError / RestoreError."""
        self._task_group = task_group
        self._group_syncs = {
            db.path: GroupSync(functools.partial(self._sync_once, db.path), task_group)
            for db in self.settings.databases
        }
        limit = self.settings.startup_timeout
        if self.settings.restore_if_missing:
            limit += self.settings.restore_timeout
        try:
            with anyio.fail_after(limit):
                # File locks held by other processes: nothing to await but time.
                while not self.leadership.join():  # noqa: ASYNC110
                    await anyio.sleep(_LOCK_POLL)  # a leader is checking who still writes
                # Lead if the lock is free; else wait for the leader to be ready (break),
                # or for the lock (the loop ends, and the else branch leads).
                while not self.leadership.try_lead():
                    if await self._follow():
                        break
                    await anyio.sleep(_LOCK_POLL)
                else:
                    await self._lead()
        except TimeoutError:
            self._give_up_startup()
            raise StartupError(
                f"the worker leading Litestream for {self._paths()} (pid "
                f"{self.leader.get('pid')}) was not replicating within {limit}s. Fix: "
                "check that worker's logs"
            ) from None
        except BaseException:
            self._give_up_startup()
            raise
        task_group.start_soon(self._supervise)
        task_group.start_soon(self._watch)
        task_group.start_soon(self._poll)

    async def start(self) -> None:
        """Start Litestream again after stop(); a no-op when it runs.

        On a standby worker this only allows it to take over when the leader goes.
        Raises StartupError (with Litestream's own error line) if it exits or is
        not ready within ``startup_timeout``; no child is left behind.
        """
        async with self._lock:
            if self._closing:
                return
            self._want_running = True
            self._recent_exits.clear()
            self._crashes_in_a_row = 0
            if self._process is not None or self.role is not Role.LEADER:
                return
            self.state = State.STARTING
            try:
                await self._spawn()
            except BaseException:  # including cancellation: never stay "starting"
                self.state = State.FAILED
                self._publish()
                raise
            self._wake.set()

    async def stop(self) -> bool:
        """Flush every database to its replica, then stop Litestream.

        The supervisor and the app stay up: start() brings Litestream back. Returns
        whether the final flush reached the replica for every database.
        """
        async with self._lock:
            self._want_running = False
            self._wake.set()
            process = self._process
            if process is None:
                if self.role is not Role.LEADER or self.state is State.STOPPED:
                    return True  # a standby has nothing to flush; a stopped one did
                # Crashed and not yet back (or given up): nothing could flush.
                logger.error("litestream %r: not running (%s), so nothing was flushed",
                             self.settings.name, self.state.value)
                if self.state is not State.FAILED:
                    self.state = State.STOPPED
                self.last_flush_ok = False
                self._publish()
                return False
            self.state = State.STOPPING
            # A cancelled shutdown must still flush and reap the child.
            with anyio.CancelScope(shield=True):
                flushed = await self._flush()
                await self._terminate(process)
            self._process = None
            self.pid = None
            self.state = State.STOPPED
            self.last_flush_ok = flushed
            self._publish()
            return flushed

    async def sync(
        self, *, timeout: float | None = None, database: str | os.PathLike[str] | None = None,
    ) -> dict[str, int]:
        """Wait until the replica holds everything committed before this call.

        For every database, or only ``database``. Concurrent callers share syncs
        (group commit), and a standby worker asks the leader's Litestream. Returns
        ``{path: replicated_txid}``; raises SyncError when Litestream is down or the
        replica does not confirm within ``timeout`` (default ``flush_timeout``) —
        never a false success.
        """
        timeout = self.settings.flush_timeout if timeout is None else timeout
        if not self._group_syncs:
            raise SyncError(f"Litestream {self.settings.name!r} has not started")
        if database is None:
            groups = self._group_syncs
        else:
            wanted = Path(database).absolute()
            groups = {p: g for p, g in self._group_syncs.items() if p == wanted}
            if not groups:
                raise SyncError(f"{wanted} is not one of the replicated databases: "
                                f"{self._paths()}")
        positions: dict[str, int] = {}
        errors: list[SyncError] = []

        async def wait(path: Path, group: GroupSync) -> None:
            try:
                replicated = await group.wait(timeout)
            except SyncError as exc:
                errors.append(exc)  # raised plain below, not in an ExceptionGroup
                return
            if replicated is not None:
                positions[str(path)] = replicated

        async with anyio.create_task_group() as task_group:
            for path, group in groups.items():
                task_group.start_soon(wait, path, group)
        if errors:
            raise errors[0]
        return positions

    async def _sync_once(self, path: Path) -> int | None:
        """One round of group commit for one database: POST /sync with wait."""
        with anyio.move_on_after(self.settings.flush_timeout) as scope:
            while not self.running:  # a restart takes milliseconds: wait it out
                if self._closing or self.state is State.FAILED or not self._want_running:
                    raise SyncError(f"Litestream {self.settings.name!r} is "
                                    f"{self.state.value}: nothing replicates {path}")
                await anyio.sleep(0.01)
            control = self._control()
            if control is None:
                raise SyncError("no control socket known for the leading worker")
            if not path.exists():
                return None  # nothing committed yet
            try:
                result = await control.sync_durably(path, timeout=self.settings.flush_timeout)
            except ControlError as exc:
                raise SyncError(f"sync of {path} failed: {exc}") from exc
            return result.replicated_txid
        assert scope.cancelled_caught
        raise SyncError(f"the replica of {path} did not confirm within "
                        f"{self.settings.flush_timeout}s")

    @property
    def sync_rounds(self) -> int:
        """How many syncs group commit has sent (far fewer than callers under load)."""
        return sum(group.rounds for group in self._group_syncs.values())

    async def close(self) -> None:
        """Shutdown: once the other workers stop writing, flush and stop."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        with anyio.CancelScope(shield=True):
            try:
                self.leadership.leave()
                if self.role is Role.LEADER:
                    if self._process is not None:
                        self.state = State.STOPPING
                        self._publish()  # standbys wait for our flush before they exit
                        await self._wait_for_other_workers()
                    if await self.stop():
                        logger.info("litestream %r: final flush complete; every committed "
                                    "row is in the replica", self.settings.name)
                    else:
                        logger.error("litestream %r: final flush FAILED; the replica may "
                                     "miss the latest rows (see the errors above)",
                                     self.settings.name)
                elif self.role is Role.STANDBY:
                    await self._wait_for_leader_to_flush()
            finally:
                async with self._lock:  # no takeover or spawn may be half-way now
                    self.leadership.resign()
                await self.control.aclose()
                if self._leader_control is not None:
                    await self._leader_control.aclose()

    # -- leading and standing by -------------------------------------------------

    async def _lead(self) -> None:
        self.role = Role.LEADER
        self.leader = {"pid": os.getpid()}
        logger.info("litestream %r: this worker (pid %d) leads replication of %s",
                    self.settings.name, os.getpid(), self._paths())
        if self.settings.restore_if_missing:
            await self._restore_missing()
        if self._closing:
            return
        self.state = State.STARTING
        self._want_running = True
        await self.start()

    async def _restore_missing(self) -> None:
        missing = [db for db in self.settings.databases if not db.path.exists()]
        if not missing:
            return
        self.state = State.RESTORING
        self._publish()
        for db in missing:
            logger.info("litestream %r: %s is missing; restoring it from %s",
                        self.settings.name, db.path, db.replica)
            await anyio.to_thread.run_sync(functools.partial(
                restore_database, self.binary, self.config_path, db, self._env,
                timeout=self.settings.restore_timeout, secrets=self._secrets,
            ))

    async def _follow(self) -> bool:
        """True once another worker leads and its Litestream answers."""
        info = self.leadership.leader_info()
        if not info or info.get("state") != State.RUNNING.value:
            return False
        self.role, self.state, self.leader = Role.STANDBY, State.STANDBY, info
        control = self._control()
        if control is None:
            return False
        try:
            found = await control.info()
        except ControlError:
            return False
        self._leader_ok = found.get("pid") == info.get("litestream_pid")
        if self._leader_ok:
            logger.info("litestream %r: standing by; worker %s leads (litestream pid %s)",
                        self.settings.name, info.get("pid"), info.get("litestream_pid"))
        return self._leader_ok

    async def _watch(self) -> None:
        """A standby takes over as soon as the leader lock is free."""
        while not self._closing:
            await anyio.sleep(_LOCK_POLL)
            if self.role is not Role.STANDBY or not self._want_running or self._closing:
                continue
            if not self.leadership.try_lead():
                continue
            logger.warning("litestream %r: the leading worker (pid %s) is gone; taking over",
                           self.settings.name, self.leader.get("pid"))
            self._leader_ok = False
            try:
                await self._lead()
            except Exception as exc:
                # Let another worker try: a lock held with nothing running would
                # leave the database unreplicated for good.
                logger.error("litestream %r: taking over failed: %s; standing by again",
                             self.settings.name, exc)
                self.role, self.state = Role.STANDBY, State.STANDBY
                self.leadership.resign()

    async def _wait_for_other_workers(self) -> None:
        with anyio.move_on_after(min(self.settings.flush_timeout, _MAX_HANDOVER_WAIT)):
            while not self.leadership.others_gone():  # noqa: ASYNC110 - other processes
                await anyio.sleep(0.02)

    async def _wait_for_leader_to_flush(self) -> None:
        """When the whole server stops, outlive the leader's flush.

        Hypercorn's master terminates every worker as soon as the first one exits;
        a standby that exits first would get the leader killed mid-flush. If the
        leader is not stopping too (only this worker is going), leave at once.
        """
        grace = time.monotonic() + _LEADER_STOP_GRACE
        limit = self.settings.flush_timeout + self.settings.stop_timeout + _MAX_HANDOVER_WAIT
        with anyio.move_on_after(limit):
            while True:
                state = (self.leadership.leader_info() or {}).get("state")
                if state != State.STOPPING.value and (
                    state != State.RUNNING.value or time.monotonic() > grace
                ):
                    return
                await anyio.sleep(0.02)

    def _publish(self) -> None:
        if self.role is Role.LEADER and self.leadership.leading:
            self.leadership.publish(
                state=self.state.value, socket=str(self.control.socket_path),
                litestream_pid=self.pid, restarts=self.restarts, version=self.version,
                last_exit_code=self.last_exit_code, name=self.settings.name,
            )

    def _give_up_startup(self) -> None:
        self.leadership.resign()
        self.leadership.leave()

    def _control(self) -> ControlClient | None:
        """Our own control socket when leading; the leader's when standing by."""
        if self.role is not Role.STANDBY:
            return self.control
        socket = self.leader.get("socket")
        if not socket:
            return None
        if self._leader_control is None or str(self._leader_control.socket_path) != socket:
            if self._leader_control is not None:
                # Its connections are to a socket that is gone; nothing to flush.
                self._task_group_spawn(self._leader_control.aclose)
            self._leader_control = ControlClient(Path(socket))
        return self._leader_control

    def _task_group_spawn(self, func: Any) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(func)

    # -- spawning and readiness ----------------------------------------------

    async def _open_process(self) -> anyio.abc.Process:
        return await anyio.open_process(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env,
            # Its own session: a terminal's SIGINT/SIGHUP reaches only us, and we
            # stop Litestream in order (SIGHUP would kill it with no final sync).
            start_new_session=True,
            # Litestream holds the leader lock with us, so a standby cannot start a
            # second one while this child still runs, even if we die first.
            pass_fds=self.leadership.fds,
        )

    def _replicate_command(self) -> list[str]:
        command = [str(self.binary), "replicate", "-config", str(self.config_path)]
        if not sys.platform.startswith("linux"):
            return command  # no parent-death signal; close() still stops it
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, "--pdeathsig", "TERM", "--", *command]
        return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *command]

    async def _spawn(self) -> None:
        assert self._task_group is not None, "run() sets the task group"
        try:
            process = await self._open_process()
        except OSError as exc:
            raise StartupError(f"could not start {self.binary}: {exc}. Fix: check the "
                               "binary exists and is executable (bin_path)") from exc
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
        self._publish()
        logger.info("litestream %r: running (pid %d, %s)", self.settings.name, process.pid,
                    self._paths())

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
                if self.state is State.RESTARTING:
                    await self._restart_after_backoff()
                else:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                continue
            code = await process.wait()
            if self._process is not process:
                continue  # stop() took it down on purpose and reaps it
            await self._drain(process)
            await process.aclose()
            self._process = None
            self.pid = None
            if self._want_running and not self._closing:
                self._record_exit(code)

    def _record_exit(self, code: int | None) -> None:
        self.last_exit_code = code
        now = time.monotonic()
        # Backoff grows with crashes in a row; a child that ran a while resets it.
        stable = self._started_at is not None and now - self._started_at > _STABLE_AFTER
        self._crashes_in_a_row = 1 if stable else self._crashes_in_a_row + 1
        self._started_at = None  # a failed respawn must not count as a stable run
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
        else:
            self.state = State.RESTARTING
            logger.warning("litestream %r: exited unexpectedly with code %s%s; restarting",
                           self.settings.name, code, self._error_tail())
        self._publish()

    async def _restart_after_backoff(self) -> None:
        delay = backoff_delay(self._crashes_in_a_row, self.settings.max_backoff)
        if delay:
            self._wake = anyio.Event()
            with anyio.move_on_after(delay):
                await self._wake.wait()  # stop() or shutdown cuts the wait short
        async with self._lock:
            if self._process is not None or self.state is not State.RESTARTING:
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
                    result = await self.control.sync_durably(
                        db.path, timeout=self.settings.flush_timeout
                    )
            except (ControlError, TimeoutError) as exc:
                ok = False
                logger.error("litestream %r: final flush of %s failed: %s",
                             self.settings.name, db.path, exc or "timed out")
                continue
            logger.info("litestream %r: flushed %s (replica at txid %d)",
                        self.settings.name, db.path, result.replicated_txid)
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
        text = scrub(text, self._secrets)
        level, message, database = parse_log_line(text)
        message = scrub(message, self._secrets)
        logger.log(level, "litestream[%d]: %s", pid, message)
        if level >= logging.WARNING:
            self._changes += 1
            self.last_errors.append(message)
            for health in self.health:
                if database == health.database.path.name:
                    health.last_errors.append(message)

    def _error_tail(self) -> str:
        return f": {self.last_errors[-1]}" if self.last_errors else ""

    def _paths(self) -> str:
        return ", ".join(str(db.path) for db in self.settings.databases)

    # -- health -----------------------------------------------------------------

    async def _poll(self) -> None:
        # The first poll runs at once, beside the app's own startup rather than
        # before it: positions appear within milliseconds of readiness.
        while not self._closing:
            await self.refresh_health()
            if self.role is Role.LEADER:  # standbys would repeat the leader's lines
                self._log_health_changes(time.monotonic())
            await anyio.sleep(self.settings.health_interval)

    def _log_health_changes(self, now: float) -> None:
        """One warning when a database's replication stalls, one line when it recovers:
        under a bare server an operator sees an outage and its end."""
        if not self.running:
            return
        for health in self.health:
            healthy = health.healthy(now, self.settings.max_lag)
            if healthy is False and health.unhealthy_since is None:
                health.unhealthy_since = now
                why = (f"polling it failed: {health.error}" if health.error is not None
                       else f"the replica misses {health.lag()} transaction(s), the oldest "
                            f"for {health.delay(now) or 0:.1f}s")
                logger.warning("litestream %r: replication of %s to %s is stalled: %s "
                               "(max_lag %ss)", self.settings.name, health.database.path,
                               health.database.replica, why, self.settings.max_lag)
            elif healthy and health.unhealthy_since is not None:
                logger.info("litestream %r: replication of %s to %s recovered after %.1fs "
                            "(delay now %.1fs)", self.settings.name, health.database.path,
                            health.database.replica, now - health.unhealthy_since,
                            health.delay(now) or 0.0)
                health.unhealthy_since = None

    async def refresh_health(self) -> None:
        """Ask Litestream (ours, or the leader's) for every database's positions."""
        try:
            await self._refresh_health()
        finally:
            self._changes += 1

    async def _refresh_health(self) -> None:
        if self.role is Role.STANDBY:
            self.leader = self.leadership.leader_info() or self.leader
            if self.leader.get("state") != State.RUNNING.value:
                self._leader_ok = False
                return
        elif not self.running:
            return
        control = self._control()
        if control is None:
            return
        try:
            listed = {d.get("path"): d for d in await control.databases()}
        except ControlError as exc:
            self._leader_ok = False
            for health in self.health:
                health.error = str(exc)
            return
        self._leader_ok = True
        now = time.monotonic()
        for health in self.health:
            await self._refresh_database(control, health, listed, now)

    async def _refresh_database(self, control: ControlClient, health: DatabaseHealth,
                                listed: dict[Any, dict[str, Any]], now: float) -> None:
        path = health.database.path
        entry = listed.get(str(path), {})
        health.litestream_status = entry.get("status")
        health.last_sync_at = entry.get("last_sync_at") or health.last_sync_at
        if not path.exists():
            health.observe(0, 0, now)  # nothing committed, so nothing to replicate
            return
        try:
            # Without wait this returns at once with both positions; a hung replica
            # shows up as a timeout here rather than as silence.
            result = await control.sync(path, wait=False, timeout=5)
        except ControlError as exc:
            health.error = str(exc)
            return
        health.observe(result.txid, result.replicated_txid, now)

    def status_key(self) -> tuple[object, ...]:
        """Changes whenever status() would: state, positions, errors, and every
        100 ms (uptime), so the status route can reuse its rendered body."""
        return (self.state, self.pid, self.restarts, self.role, self._leader_ok,
                self._changes, int(time.monotonic() * 10))

    def status(self) -> dict[str, Any]:
        """The status route's JSON: only values held in memory."""
        now = time.monotonic()
        max_lag = self.settings.max_lag
        databases = [h.to_json(now, max_lag) for h in self.health]
        standby = self.role is Role.STANDBY
        leader = self.leader if standby else {}
        return {
            "name": self.settings.name,
            "status": "running" if self.running else "down",
            "state": self.state.value,
            "role": self.role.value if self.role else None,
            "leader_pid": self.leader.get("pid"),
            "worker_pid": os.getpid(),
            "healthy": overall_health([d["healthy"] for d in databases])
                       if self.running else False,
            "pid": leader.get("litestream_pid") if standby else self.pid,
            "uptime_s": uptime(self._started_at) if self.running and not standby else None,
            "restarts": leader.get("restarts", 0) if standby else self.restarts,
            "last_exit_code": leader.get("last_exit_code") if standby else self.last_exit_code,
            "last_errors": list(self.last_errors),
            "last_flush_ok": self.last_flush_ok,
            "version": leader.get("version") if standby else self.version,
            "databases": databases,
        }


def backoff_delay(crashes_in_a_row: int, max_backoff: float) -> float:
    """No wait before the first restart, then 0.5 s doubling up to ``max_backoff``."""
    if crashes_in_a_row <= 1:
        return 0.0
    return float(min(_FIRST_BACKOFF * 2 ** (crashes_in_a_row - 2), max_backoff))


class _Exited(Exception):
    def __init__(self, code: int | None) -> None:
        self.code = code
