"""The keeper: keeps this worker's Litestream running while it leads.

Start it, restart it when it dies (the restart policy decides when, or whether),
stop it on request with a flush first. The process itself is _litestream/process.py; the policy
is _litestream/restart.py; this file is what joins them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._config.settings import Settings
from .._exceptions import StartupError
from .._litestream.control import ControlClient, SyncResult
from .._litestream.logs import LitestreamLog
from .._litestream.process import LitestreamProcess
from .._litestream.restart import Exited, GiveUp, Restart, RestartPolicy, run_restarting
from .._state import State

if TYPE_CHECKING:
    from .._locks.watchdog import Watchdog

logger = logging.getLogger("asgi_litestream")


class Keeper:
    """Owns the Litestream child of one worker and the state it is in."""

    def __init__(self, settings: Settings, *, command: Sequence[str], env: Mapping[str, str],
                 control: ControlClient, log: LitestreamLog,
                 pass_fds: Callable[[], list[int]], leading: Callable[[], bool],
                 on_change: Callable[[], None],
                 on_position: Callable[[Path, SyncResult], None] | None = None) -> None:
        self.settings = settings
        self.state = State.STARTING
        self.child: LitestreamProcess | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_flush_ok: bool | None = None
        self.last_flush_seconds: float | None = None
        self.version: str | None = None  # Litestream's, once it has run
        # Why Litestream must never start again in this process (a stale file the app
        # has open): start() refuses, the final flush too. None: it may.
        self.refused: str | None = None
        self.want_running = True
        self._closing = False
        self.lock = anyio.Lock()  # one start, stop, restart or takeover at a time
        self._command = command
        self._env = env
        self._control = control
        self._log = log
        self._pass_fds = pass_fds
        self._leading = leading
        self._on_change = on_change
        self._on_position = on_position  # what the final flush found, per database
        self._policy = RestartPolicy(max_restarts=settings.max_restarts,
                                     restart_window=settings.restart_window,
                                     max_backoff=settings.max_backoff)
        self._wake = anyio.Event()
        # The service's (attach()): Litestream's log pumps and the lease's renewals.
        self._task_group: anyio.abc.TaskGroup | None = None
        # With a lease: Litestream may run only while its watchdog allows, which kills
        # it at the lease's deadline (LeaseKeeper.guard sets it).
        self.watchdog: Watchdog | None = None

    def attach(self, task_group: anyio.abc.TaskGroup) -> None:
        """The task group Litestream's log pumps run in (the service's): before start()."""
        self._task_group = task_group

    def start_soon(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``func`` beside Litestream (the lease's renewals): it lives as long as the
        service's task group, through the final flush."""
        if self._task_group is None:
            raise RuntimeError("Keeper.start_soon() before attach()")
        self._task_group.start_soon(func)

    @property
    def closing(self) -> bool:
        """The app is shutting down: nothing starts or restarts Litestream any more."""
        return self._closing

    def begin_closing(self) -> None:
        """The app is shutting down: no start or restart from now on; a backoff ends."""
        self._closing = True
        self.wake()

    def refuse(self, reason: str) -> None:
        """Stay down for good (``failed``), even for the final flush: starting would
        replicate a file that must not reach the replica. ``reason`` says why."""
        self.refused = reason
        self.want_running = False
        self.set_state(State.FAILED)

    def use_watchdog(self, watchdog: Watchdog) -> None:
        """Run Litestream only while ``watchdog`` allows (the lease's): it kills the
        child at the lease's deadline."""
        self.watchdog = watchdog

    def set_state(self, state: State) -> None:
        """The one way the state changes; the service publishes it to the standbys."""
        self.state = state
        self._on_change()

    def wake(self) -> None:
        """Cut a wait short: stop() or shutdown during a backoff."""
        self._wake.set()

    async def start(self) -> None:
        """Start Litestream (again after stop()); a no-op when it runs. Not leading,
        this only allows a later takeover. Raises StartupError."""
        async with self.lock:
            if self.closing:
                return
            self.want_running = True
            self._policy.reset()
            if self.refused is not None:
                logger.error("litestream %r: not started: %s", self.settings.name,
                             self.refused)
                return
            if self.child is not None or not self._leading() or self._lease_refuses():
                return
            self.set_state(State.STARTING)
            try:
                await self.spawn()
            except BaseException:  # including cancellation: never stay "starting"
                self.set_state(State.FAILED)
                raise
            self._wake.set()

    async def start_for_the_final_flush(self) -> None:
        """Litestream is down (crashed, in backoff, or given up) when the app stops: start
        it once more, so that the last commits still reach the replica."""
        logger.warning("litestream %r: not running at shutdown (%s); starting it once for "
                       "the final flush", self.settings.name, self.state.value)
        with anyio.move_on_after(self.settings.startup_timeout):
            try:
                await self.start()
            except StartupError as exc:
                logger.error("litestream %r: could not start it for the final flush: %s",
                             self.settings.name, exc)

    async def keep_alive(self) -> None:
        """The service's task: restart Litestream whenever it exits unasked."""
        while not self.closing:
            if self.child is None:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            await run_restarting(self._run_once, self._policy, on_restart=self._restarting,
                                 on_give_up=self._give_up, sleep=self._backoff)

    async def kill(self, state: State) -> None:
        """Stop Litestream at once, with no final sync (a fence: the lease may be
        someone else's by now, and a last upload would be a second writer)."""
        self.want_running = False
        self._wake.set()
        async with self.lock:
            child, self.child = self.child, None
            if child is not None:
                await child.aclose(grace=0)
            self.set_state(state)

    async def stop(self) -> bool:
        """Flush every database to its replica, then stop Litestream; start() brings
        it back. Returns whether the flush reached every replica."""
        async with self.lock:
            self.want_running = False
            self._wake.set()
            child = self.child
            if child is None:
                if not self._leading() or self.state is State.STOPPED:
                    return True  # a standby has nothing to flush; a stopped one did
                # Crashed and not yet back (or given up): nothing could flush.
                logger.error("litestream %r: not running (%s), so nothing was flushed",
                             self.settings.name, self.state.value)
                self.last_flush_ok = False
                self.set_state(State.FAILED if self.state is State.FAILED else State.STOPPED)
                return False
            self.set_state(State.STOPPING)
            began = time.monotonic()
            with anyio.CancelScope(shield=True):  # a cancelled stop still flushes and reaps
                flushed = await child.flush(self.settings.databases,
                                            self.settings.flush_timeout, self._on_position)
                self.last_flush_seconds = time.monotonic() - began
                await child.aclose(grace=self.settings.stop_timeout)
            self.child = None
            self.last_flush_ok = flushed
            self.set_state(State.STOPPED)
            logger.info("litestream %r: stopped (pid %d, exit code %s)", self.settings.name,
                        child.pid, child.returncode)
            return flushed

    async def spawn(self) -> None:
        """Spawn Litestream with the current environment; the caller holds the lock."""
        if self._task_group is None:
            raise RuntimeError("attach() the service's task group before start()")
        if self._lease_refuses():
            self.set_state(State.FENCED)
            return
        self.child = await LitestreamProcess.start(
            self._command, name=self.settings.name, env=self._env, pass_fds=self._pass_fds(),
            control=self._control, log=self._log, databases=self.settings.databases,
            task_group=self._task_group, timeout=self.settings.startup_timeout,
            on_spawn=None if self.watchdog is None else self.watchdog.watch,
        )
        self.version = self.child.version
        self.set_state(State.RUNNING)
        logger.info("litestream %r: running (pid %d): %s", self.settings.name, self.child.pid,
                    ", ".join(f"{db.where} → {db.replica}/<file name>"
                              if db.is_folder else f"{db.path} → {db.replica}"
                              for db in self.settings.databases))

    def _lease_refuses(self) -> bool:
        """With a lease: not ours (yet), or it could have expired; never start then (and
        say so)."""
        if self.watchdog is None or self.watchdog.may_run():
            return False
        logger.warning("litestream %r: not started: this host does not hold the lease "
                       "(or it could have expired)", self.settings.name)
        return True

    async def _run_once(self, restart: bool) -> Exited | None:
        """Run the child (spawned again first when ``restart``) until it exits: how,
        or None when that was no crash (stopped, killed, fenced, or not to restart)."""
        if restart:
            async with self.lock:
                if self.child is not None or self.state is not State.RESTARTING:
                    return None  # start(), stop() or a shutdown came during the backoff
                self.restarts += 1
                try:
                    await self.spawn()
                except StartupError as exc:
                    logger.warning("litestream %r: restart failed: %s", self.settings.name,
                                   exc)
                    return Exited(self.last_exit_code, ran_for=None)
        child = self.child
        if child is None:
            return None  # the lease refused the restart (fenced)
        code = await child.wait()
        if self.child is not child:
            return None  # stop() took it down on purpose and reaps it
        await child.aclose(grace=0)
        self.child = None
        if not self.want_running or self.closing:
            return None
        if self.watchdog is not None and not self.watchdog.may_run():
            # Killed by the lease's watchdog (or exited past the deadline): not a
            # crash to restart; the lease's task fences and wins the lease back.
            self.set_state(State.FENCED)
            return None
        self.last_exit_code = code
        return Exited(code, ran_for=time.monotonic() - child.started_at)

    def _give_up(self, exited: Exited, decision: GiveUp) -> None:
        self.want_running = False
        self.set_state(State.FAILED)
        logger.error(
            "litestream %r: exited %d times within %ss (last code %s); staying down. "
            "Replication is OFF. Fix the cause%s, then call start_litestream(%r)",
            self.settings.name, decision.exits, self.settings.restart_window, exited.code,
            self._log.tail(), self.settings.name,
        )

    def _restarting(self, exited: Exited, decision: Restart) -> None:
        self.set_state(State.RESTARTING)
        logger.warning("litestream %r: exited unexpectedly with code %s%s; restarting",
                       self.settings.name, exited.code, self._log.tail())

    async def _backoff(self, delay: float) -> None:
        if delay:
            self._wake = anyio.Event()
            with anyio.move_on_after(delay):
                await self._wake.wait()  # stop() or shutdown cuts the wait short
