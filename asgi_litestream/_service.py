"""The replication service: keeps one database set replicated for one worker.

It reads top to bottom, as an anyio service (``await task_group.start(service.serve)``)::

    serve()  join the database's workers, then lead or follow (_leader.py):
               lead:   restore missing databases, start Litestream (_child.py), ready
               follow: find the leading worker's Litestream ready
             ── started ──  the app runs; meanwhile, in the service's own task group:
               _keep_alive()    restart Litestream when it dies (_restart.py decides)
               _watch_leader()  a standby takes over as soon as the leader is gone
               _poll_health()   refresh replication positions (_health.py)
             ── close() ──  hand over: wait for the other workers to stop writing,
               flush every database, stop Litestream, release the locks

Every state change goes through _set_state(), which also tells the other workers.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from ._child import LitestreamProcess, replicate_command
from ._config import Settings
from ._control import ControlClient, ControlError
from ._exceptions import StartupError, SyncError
from ._group_sync import DurableSyncs
from ._health import HealthPoller, overall_health
from ._leader import Leadership
from ._logs import LitestreamLog
from ._restart import GiveUp, RestartPolicy
from ._restore import restore_database
from ._status import Role, State, uptime
from ._workdir import CONFIG_NAME, SOCKET_NAME

logger = logging.getLogger("asgi_litestream")

_LOCK_POLL = 0.1
# How long a leader waits at shutdown for the other workers to stop writing.
_MAX_HANDOVER_WAIT = 5.0


class ReplicationService:
    """Owns Litestream for one LitestreamLifespan in one worker process."""

    def __init__(
        self, settings: Settings, *, binary: Path, workdir: Path, environ: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.config_path = workdir / CONFIG_NAME
        self.control = ControlClient(workdir / SOCKET_NAME)
        self.leadership = Leadership(settings.databases)
        self.log = LitestreamLog(settings.secrets())
        self.health = HealthPoller(settings.databases, name=settings.name,
                                   max_lag=settings.max_lag)
        self.policy = RestartPolicy(max_restarts=settings.max_restarts,
                                    restart_window=settings.restart_window,
                                    max_backoff=settings.max_backoff)
        self.role: Role | None = None
        self.state = State.STARTING
        self.child: LitestreamProcess | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_flush_ok: bool | None = None
        self.version: str | None = None  # Litestream's, once it has run
        self.leader: dict[str, Any] = {}  # what the leading worker published
        self.syncs: DurableSyncs | None = None
        self._env = settings.child_env(environ)
        self._command = replicate_command(binary, self.config_path)
        self._leader_control: ControlClient | None = None
        self._leader_ok = False
        self._want_running = True
        self._restart_delay = 0.0
        self._closing = False
        self._close_requested = anyio.Event()
        self._closed = anyio.Event()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one start, stop, restart or takeover at a time
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def running(self) -> bool:
        """True while the databases are being replicated, by us or by the leader."""
        if self.role is Role.STANDBY:
            return self._leader_ok
        return self.state is State.RUNNING

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    # -- the service ------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Start (lead or follow), report started, supervise until close(), then hand
        over, flush and stop. A startup error is raised plain, before ``started``."""
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                self.syncs = DurableSyncs((db.path for db in self.settings.databases),
                                          self._sync_once, task_group)
                try:
                    await self._join()
                except BaseException as exc:
                    self.leadership.resign()
                    self.leadership.leave()
                    if not isinstance(exc, Exception):
                        raise
                    failure = exc
                    task_group.cancel_scope.cancel()
                else:
                    task_group.start_soon(self._keep_alive)
                    task_group.start_soon(self._watch_leader)
                    task_group.start_soon(self._poll_health)
                    task_status.started()
                    try:
                        await self._close_requested.wait()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._hand_over_and_stop()
                        task_group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.control.aclose()
                if self._leader_control is not None:
                    await self._leader_control.aclose()
            self._closed.set()
        if failure is not None:
            raise failure

    async def close(self) -> None:
        """Shutdown: return once serve() has flushed and stopped Litestream."""
        self._close_requested.set()
        with anyio.CancelScope(shield=True):
            await self._closed.wait()

    async def _join(self) -> None:
        limit = self.settings.startup_timeout
        if self.settings.restore_if_missing:
            limit += self.settings.restore_timeout
        try:
            with anyio.fail_after(limit):
                # File locks held by other processes: nothing to await but time.
                while not self.leadership.join():  # noqa: ASYNC110
                    await anyio.sleep(_LOCK_POLL)  # a leader is checking who still writes
                # Lead if the lock is free; else wait for the leader to be ready, or
                # for the lock.
                while not self.leadership.try_lead():
                    if await self._follow():
                        return
                    await anyio.sleep(_LOCK_POLL)
                await self._lead()
        except TimeoutError:
            raise StartupError(
                f"the worker leading Litestream for {self._paths()} (pid "
                f"{self.leader.get('pid')}) was not replicating within {limit}s. Fix: "
                "check that worker's logs"
            ) from None

    async def _hand_over_and_stop(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            self.leadership.leave()
            if self.role is Role.LEADER:
                if self.child is not None:
                    self._set_state(State.STOPPING)  # standbys wait for our flush
                    await self.leadership.wait_for_others(
                        min(self.settings.flush_timeout, _MAX_HANDOVER_WAIT))
                if await self.stop():
                    logger.info("litestream %r: final flush complete; every committed "
                                "row is in the replica", self.settings.name)
                else:
                    logger.error("litestream %r: final flush FAILED; the replica may "
                                 "miss the latest rows (see the errors above)",
                                 self.settings.name)
            elif self.role is Role.STANDBY:
                await self.leadership.wait_for_leader_to_flush(
                    self.settings.flush_timeout + self.settings.stop_timeout
                    + _MAX_HANDOVER_WAIT)
        finally:
            async with self._lock:  # no takeover or spawn may be half-way now
                self.leadership.resign()

    # -- leading and following ----------------------------------------------------

    async def _lead(self) -> None:
        self.role = Role.LEADER
        self.leader = {"pid": os.getpid()}
        logger.info("litestream %r: this worker (pid %d) leads replication of %s",
                    self.settings.name, os.getpid(), self._paths())
        if self.settings.restore_if_missing:
            await self._restore_missing()
        if not self._closing:
            await self.start()

    async def _restore_missing(self) -> None:
        missing = [db for db in self.settings.databases if not db.path.exists()]
        if missing:
            self._set_state(State.RESTORING)
        for db in missing:
            logger.info("litestream %r: %s is missing; restoring it from %s",
                        self.settings.name, db.path, db.replica)
            await anyio.to_thread.run_sync(functools.partial(
                restore_database, self.binary, self.config_path, db, self._env,
                timeout=self.settings.restore_timeout, secrets=self.settings.secrets(),
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

    async def _watch_leader(self) -> None:
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

    def _control(self) -> ControlClient | None:
        """Our own control socket when leading; the leader's when standing by."""
        if self.role is not Role.STANDBY:
            return self.control
        socket = self.leader.get("socket")
        if not socket:
            return None
        if self._leader_control is None or str(self._leader_control.socket_path) != socket:
            if self._leader_control is not None and self._task_group is not None:
                # Its connections are to a socket that is gone; nothing to flush.
                self._task_group.start_soon(self._leader_control.aclose)
            self._leader_control = ControlClient(Path(socket))
        return self._leader_control

    # -- starting, keeping alive, stopping -----------------------------------------

    async def start(self) -> None:
        """Start Litestream (again after stop()); a no-op when it runs. On a standby
        this only allows it to take over when the leader goes. Raises StartupError."""
        async with self._lock:
            if self._closing:
                return
            self._want_running = True
            self.policy.reset()
            if self.child is not None or self.role is not Role.LEADER:
                return
            self._set_state(State.STARTING)
            try:
                await self._spawn()
            except BaseException:  # including cancellation: never stay "starting"
                self._set_state(State.FAILED)
                raise
            self._wake.set()

    async def _spawn(self) -> None:
        assert self._task_group is not None, "serve() sets the task group"
        self.child = await LitestreamProcess.start(
            self._command, name=self.settings.name, env=self._env,
            pass_fds=self.leadership.fds, control=self.control, log=self.log,
            databases=self.settings.databases, task_group=self._task_group,
            timeout=self.settings.startup_timeout,
        )
        self.version = self.child.version
        self._set_state(State.RUNNING)
        logger.info("litestream %r: running (pid %d, %s)", self.settings.name, self.child.pid,
                    self._paths())

    async def _keep_alive(self) -> None:
        while not self._closing:
            child = self.child
            if child is None:
                if self.state is State.RESTARTING:
                    await self._restart_after_backoff()
                else:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                continue
            code = await child.wait()
            if self.child is not child:
                continue  # stop() took it down on purpose and reaps it
            await child.aclose(grace=0)
            self.child = None
            if self._want_running and not self._closing:
                self._on_exit(code, ran_for=time.monotonic() - child.started_at)

    def _on_exit(self, code: int | None, *, ran_for: float | None) -> None:
        self.last_exit_code = code
        decision = self.policy.on_exit(at=time.monotonic(), ran_for=ran_for)
        if isinstance(decision, GiveUp):
            self._want_running = False
            self._set_state(State.FAILED)
            logger.error(
                "litestream %r: exited %d times within %ss (last code %s); staying down. "
                "Replication is OFF. Fix the cause%s, then call start_litestream(%r)",
                self.settings.name, decision.exits, self.settings.restart_window, code,
                self.log.tail(), self.settings.name,
            )
            return
        self._restart_delay = decision.delay
        self._set_state(State.RESTARTING)
        logger.warning("litestream %r: exited unexpectedly with code %s%s; restarting",
                       self.settings.name, code, self.log.tail())

    async def _restart_after_backoff(self) -> None:
        if self._restart_delay:
            self._wake = anyio.Event()
            with anyio.move_on_after(self._restart_delay):
                await self._wake.wait()  # stop() or shutdown cuts the wait short
        async with self._lock:
            if self.child is not None or self.state is not State.RESTARTING:
                return
            self.restarts += 1
            try:
                await self._spawn()
            except StartupError as exc:
                logger.warning("litestream %r: restart failed: %s", self.settings.name, exc)
                self._on_exit(self.last_exit_code, ran_for=None)

    async def stop(self) -> bool:
        """Flush every database to its replica, then stop Litestream; the service
        stays up and start() brings it back. Whether the flush reached every replica."""
        async with self._lock:
            self._want_running = False
            self._wake.set()
            child = self.child
            if child is None:
                if self.role is not Role.LEADER or self.state is State.STOPPED:
                    return True  # a standby has nothing to flush; a stopped one did
                # Crashed and not yet back (or given up): nothing could flush.
                logger.error("litestream %r: not running (%s), so nothing was flushed",
                             self.settings.name, self.state.value)
                self.last_flush_ok = False
                self._set_state(State.FAILED if self.state is State.FAILED else State.STOPPED)
                return False
            self._set_state(State.STOPPING)
            with anyio.CancelScope(shield=True):  # a cancelled stop still flushes and reaps
                flushed = await child.flush(self.settings.databases,
                                            self.settings.flush_timeout)
                await child.aclose(grace=self.settings.stop_timeout)
            self.child = None
            self.last_flush_ok = flushed
            self._set_state(State.STOPPED)
            return flushed

    # -- durable waits --------------------------------------------------------------

    async def sync(self, *, timeout: float | None = None,
                   database: str | os.PathLike[str] | None = None) -> dict[str, int]:
        """Wait until the replica holds everything committed before this call."""
        if self.syncs is None:
            raise SyncError(f"Litestream {self.settings.name!r} has not started")
        timeout = self.settings.flush_timeout if timeout is None else timeout
        return await self.syncs.wait(timeout, database)

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

    # -- health and status ------------------------------------------------------------

    async def _poll_health(self) -> None:
        # The first poll runs at once, beside the app's own startup rather than
        # before it: positions appear within milliseconds of readiness.
        while not self._closing:
            await self.refresh_health()
            if self.role is Role.LEADER and self.running:
                self.health.log_changes(time.monotonic())  # standbys would repeat it
            await anyio.sleep(self.settings.health_interval)

    async def refresh_health(self) -> None:
        """Ask Litestream (ours, or the leader's) for every database's positions."""
        if self.role is Role.STANDBY:
            self.leader = self.leadership.leader_info() or self.leader
            if self.leader.get("state") != State.RUNNING.value:
                self._leader_ok = False
                return
        elif not self.running:
            return
        control = self._control()
        if control is not None:
            self._leader_ok = await self.health.poll(control)

    def status_key(self) -> tuple[object, ...]:
        """Changes whenever status() would: state, positions, errors, and every
        100 ms (uptime), so the status route can reuse its rendered body."""
        return (self.state, self.pid, self.restarts, self.role, self._leader_ok,
                self.health.changes, self.log.changes, int(time.monotonic() * 10))

    def status(self) -> dict[str, Any]:
        """The status snapshot (the status route's JSON): only values held in memory."""
        databases = self.health.snapshot(time.monotonic(), self.log.errors_of)
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
            "uptime_s": uptime(self.child.started_at)
                        if self.running and self.child is not None else None,
            "restarts": leader.get("restarts", 0) if standby else self.restarts,
            "last_exit_code": leader.get("last_exit_code") if standby else self.last_exit_code,
            "last_errors": list(self.log.last_errors),
            "last_flush_ok": self.last_flush_ok,
            "version": leader.get("version") if standby else self.version,
            "databases": databases,
        }

    # -- small things -------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        """The one way state changes: the leader also tells the standbys."""
        self.state = state
        if self.role is Role.LEADER and self.leadership.leading:
            self.leadership.publish(
                state=state.value, socket=str(self.control.socket_path),
                litestream_pid=self.pid, restarts=self.restarts, version=self.version,
                last_exit_code=self.last_exit_code, name=self.settings.name,
            )

    def _paths(self) -> str:
        return ", ".join(str(db.path) for db in self.settings.databases)
