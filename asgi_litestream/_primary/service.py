"""The replication service: keeps one database set replicated for one worker.

It reads top to bottom, as an anyio service (``await task_group.start(service.serve)``)::

    serve()  join the database's workers (_locks/workers.py), then lead or follow
             (_primary/election.py):
               lead:   with lease=True, take the lease in the replica first
                       (_locks/lease_keeper.py; the app already serves, readiness 503),
                       restore missing databases (_restore/boot.py), start Litestream
                       (_primary/keeper.py, which spawns _litestream/process.py) and
                       wait until it is ready
               follow: find the leading worker's Litestream ready
             ── started ──  the app runs; meanwhile, in the service's own task group:
               keeper.keep_alive()  restart Litestream when it dies (_litestream/restart.py decides)
               _watch_leader()      a standby takes over as soon as the leader is gone
               _poll_health()       refresh replication positions (_primary/health.py)
               hold_the_lease()     renew it; fence (kill Litestream) before it expires
             ── close() ──  hand over: wait for the other workers to stop writing,
               flush every database, stop Litestream, release the locks

Every state change goes through Keeper.set_state(), which calls _publish() to tell
the other workers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from .._config.settings import Settings
from .._exceptions import StartupError, SyncError
from .._litestream.control import ControlClient, ControlError
from .._litestream.logs import LitestreamLog
from .._litestream.positions import PositionError
from .._litestream.process import replicate_command
from .._litestream.scrape import LitestreamScrape
from .._litestream.workdir import CONFIG_NAME, SOCKET_NAME
from .._locks.lease_keeper import LeaseKeeper, hold_the_lease, lease_heir
from .._locks.workers import BOOT_ID, Leadership
from .._restore.boot import restore_missing
from .._restore.verify import Verifier
from .._state import Role, State
from .election import Election
from .group_sync import DurableSyncs
from .guard import find_stale, guard
from .health import HealthPoller
from .keeper import Keeper

logger = logging.getLogger("asgi_litestream")

_LOCK_POLL = 0.1
_NEW_DATABASE_POLL = 0.05
# States in which a durable wait fails at once rather than wait for a restart.
_NOT_REPLICATING = (State.FAILED, State.WAITING_FOR_LEASE, State.FENCED)
# How long a leader waits at shutdown for the other workers to stop writing.
_MAX_HANDOVER_WAIT = 5.0
# After a fence: how often to ask the replica's position before counting it moved on.
_MOVED_ON_ATTEMPTS = 4


class _StoppedEarly(StartupError):
    """The server shut down before the databases were in place: not a failure."""


class ReplicationService:
    """Owns Litestream for one LitestreamLifespan in one worker process."""

    def __init__(
        self, settings: Settings, *, binary: Path, workdir: Path, environ: Mapping[str, str],
        metrics_addr: str | None = None,
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.config_path = workdir / CONFIG_NAME
        self.control = ControlClient(workdir / SOCKET_NAME)
        self.leadership = Leadership(settings.databases)
        self.log = LitestreamLog(settings.secrets())
        self.health = HealthPoller(settings.databases, name=settings.name,
                                   max_lag=settings.max_lag)
        self.election = Election(self.leadership, self.control)
        self.syncs: DurableSyncs | None = None
        self._env = settings.child_env(environ)
        self.keeper = Keeper(settings, command=replicate_command(binary, self.config_path),
                             env=self._env, control=self.control, log=self.log,
                             pass_fds=lambda: self.leadership.fds,
                             leading=lambda: self.role is Role.LEADER, on_change=self._publish,
                             on_position=lambda path, result: self.health.note_position(
                                 path, result.txid, result.replicated_txid))
        self.verifier = Verifier(
            name=settings.name, binary=binary, config_path=self.config_path,
            databases=settings.databases, env=self._env, timeout=settings.restore_timeout,
            secrets=settings.secrets(), on_result=self._publish,
            control=lambda: self.election.control() if self.running else None)
        self.lease = LeaseKeeper.of(settings, self._env) if settings.lease else None
        if self.lease is not None:
            self.lease.guard(self.keeper)  # no Litestream starts here without the lease
        self.metrics_addr = metrics_addr  # Litestream's /metrics (ours; or none)
        self.scrape = LitestreamScrape()  # its /metrics, fetched in the background
        self._close_requested = anyio.Event()
        self._closed = anyio.Event()
        # Set once this worker's databases are in place (lease held, files checked and
        # restored, Litestream running here or at the leading worker), or startup
        # failed: the app's own startup waits for it (see wait_in_place).
        self._placed = anyio.Event()
        self._placed_error: Exception | None = None
        self._joining: anyio.CancelScope | None = None
        self.app_started = False  # the app runs on the files: never swap them now

    @property
    def role(self) -> Role | None:
        return self.election.role

    @property
    def running(self) -> bool:
        """True while the databases are being replicated, by us or by the leader."""
        if self.role is Role.STANDBY:
            return self.election.leader_ok
        return self.state is State.RUNNING

    @property
    def state(self) -> State:
        return self.keeper.state

    @property
    def pid(self) -> int | None:
        child = self.keeper.child
        return None if child is None else child.pid

    # -- the service ------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Start (lead or follow), report started, supervise until close(), then hand
        over, flush and stop. A startup error is raised plain, before ``started``."""
        failure: Exception | None = None
        # With a lease the app serves at once (readiness 503, state waiting_for_lease)
        # while another host may hold the lease for as long as it runs.
        started_early = self.lease is not None
        try:
            async with anyio.create_task_group() as task_group:
                self.keeper.task_group = task_group
                self.syncs = DurableSyncs(
                    (db.path for db in self.settings.databases if not db.is_folder),
                    self._sync_once, task_group, in_folder=self._in_a_folder)
                if started_early:
                    task_status.started()
                try:
                    # close() cuts this short while the server already serves (a
                    # lease, behind the gate): a shutdown must not wait out the lease,
                    # the position reads or a restore.
                    with anyio.CancelScope() as self._joining:
                        await self._join()
                    if self._joining.cancelled_caught:
                        raise _StoppedEarly(f"Litestream {self.settings.name!r} was stopped "
                                            "before its databases were in place")
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        if self.keeper.child is not None:  # cut short right after a spawn
                            await self.keeper.kill(State.STOPPED)
                        if self.lease is not None:
                            await self.lease.release()  # the successor takes it now
                    self.leadership.resign()
                    self.leadership.leave()
                    if not isinstance(exc, Exception):
                        raise
                    failure = self._placed_error = exc
                    self._placed.set()
                    task_group.cancel_scope.cancel()
                else:
                    self._placed.set()
                    task_group.start_soon(self.keeper.keep_alive)
                    task_group.start_soon(self._watch_leader)
                    task_group.start_soon(self._poll_health)
                    if self.settings.metrics_path is not None:
                        # Prometheus scrapes every 15 s or more: no need to ask more often.
                        task_group.start_soon(self.scrape.run, self._metrics_address,
                                              max(self.settings.health_interval, 10.0))
                    if self.settings.verify_interval is not None:
                        task_group.start_soon(
                            self.verifier.every, self.settings.verify_interval,
                            lambda: self.role is Role.LEADER and self.running)
                    if not started_early:
                        task_status.started()
                    try:
                        await self._close_requested.wait()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._hand_over_and_stop()
                        task_group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.election.aclose()
            if not self._placed.is_set():
                self._placed_error = StartupError(
                    f"Litestream {self.settings.name!r} stopped before its databases "
                    "were in place")
                self._placed.set()
            self._closed.set()
        if isinstance(failure, _StoppedEarly):
            logger.info("litestream %r: %s", self.settings.name, failure)
            self.keeper.set_state(State.STOPPED)
        elif failure is not None:
            if not started_early:
                raise failure
            # The app already serves: stay down and say so, rather than crash it.
            logger.error("litestream %r: could not start after taking the lease: %s; "
                         "NOT replicating (readiness answers 503)", self.settings.name,
                         failure)
            self.keeper.set_state(State.FAILED)

    async def wait_in_place(self) -> None:
        """Return once the databases are in place for the app; raise startup's error."""
        await self._placed.wait()
        if self._placed_error is not None:
            raise self._placed_error

    def placed(self) -> bool:
        """Whether wait_in_place() returns (or raises) at once."""
        return self._placed.is_set()

    def note_app_start(self) -> None:
        """The app's startup begins: from now on no file may be swapped beneath it."""
        self.app_started = True

    async def close(self) -> None:
        """Shutdown: return once serve() has flushed and stopped Litestream (or, still
        getting the databases in place behind the gate, has given that up)."""
        if not self._placed.is_set() and self._joining is not None:
            self._joining.cancel()
        self._close_requested.set()
        with anyio.CancelScope(shield=True):
            await self._closed.wait()

    async def _join(self) -> None:
        limit = self.settings.startup_timeout
        if self.settings.restore_if_missing:
            limit += self.settings.restore_timeout
        if self.lease is not None:
            limit = math.inf  # the lease may be held for as long as its holder runs
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
            if self.role is Role.LEADER:
                raise StartupError(
                    f"this worker could not restore and start Litestream for {self._paths()} "
                    f"within {limit:g}s (restore_timeout + startup_timeout). Fix: see the "
                    "lines above; raise restore_timeout for a large restore") from None
            raise StartupError(
                f"the worker leading Litestream for {self._paths()} (pid "
                f"{self.election.leader.get('pid')}) was not replicating within {limit:g}s. "
                "Fix: check that worker's logs"
            ) from None

    async def _hand_over_and_stop(self) -> None:
        if self.role is Role.LEADER and self.keeper.child is None and self.state in (
            State.RESTARTING, State.FAILED,
        ) and self.keeper.refused is None:
            await self.keeper.start_for_the_final_flush()
        stopped_by_the_app = self.role is Role.LEADER and self.state is State.STOPPED
        not_the_writer = (self.state in (State.WAITING_FOR_LEASE, State.FENCED)
                          or self.keeper.refused is not None)
        self.keeper.closing = True
        self.keeper.wake()
        try:
            self.leadership.leave()
            if not_the_writer:
                logger.info("litestream %r: %s at shutdown: not the writer, nothing to "
                            "flush", self.settings.name, self.state.value)
            elif stopped_by_the_app:
                logger.warning("litestream %r: no final flush: the app stopped Litestream "
                               "(stop_litestream) and did not start it again; rows written "
                               "since are not in the replica", self.settings.name)
            elif self.role is Role.LEADER:
                if self.keeper.child is not None:
                    self.keeper.set_state(State.STOPPING)  # standbys wait for our flush
                    await self.leadership.wait_for_others(
                        min(self.settings.flush_timeout, _MAX_HANDOVER_WAIT))
                if await self.keeper.stop():
                    logger.info("litestream %r: final flush complete; every committed "
                                "row is in the replica", self.settings.name)
                else:
                    logger.error("litestream %r: final flush FAILED; the replica may "
                                 "miss the latest rows (see the errors above)",
                                 self.settings.name)
            elif self.role is Role.STANDBY:
                # The leader flushes database after database, each up to flush_timeout.
                flushing = (self.settings.flush_timeout + 2) * len(self.settings.databases)
                await self.leadership.wait_for_leader_to_flush(
                    flushing + self.settings.stop_timeout + _MAX_HANDOVER_WAIT)
            if self.lease is not None:
                await self.lease.release()  # after the flush: the successor takes it now
        finally:
            async with self.keeper.lock:  # no takeover or spawn may be half-way now
                self.leadership.resign()

    # -- leading and following ----------------------------------------------------

    async def _lead(self, *, takeover: bool = False) -> None:
        # Who led before us, read before we publish over it (see lease_heir).
        previous = self.leadership.leader_info() or {}
        self.election.lead()
        logger.info("litestream %r: this worker (pid %d) leads replication of %s",
                    self.settings.name, os.getpid(), self._paths())
        if self.lease is not None:
            self.keeper.set_state(State.WAITING_FOR_LEASE)
            if not await self.lease.acquire(give_up=self._stopping,
                                            inherit_from=lease_heir(previous),
                                            fail_fast=not takeover):
                return
        if takeover and self.app_started:
            # The app holds connections to these files: a stale one cannot be swapped
            # beneath it. Stay down and say so; a restart restores it first.
            stale = await anyio.to_thread.run_sync(functools.partial(
                find_stale, self.settings, self._env, binary=self.binary,
                config_path=self.config_path))
            if stale:
                # Never started again here, not even for the final flush: that would
                # replicate the stale file over the replica.
                self.keeper.refused = (f"{stale[0].describe()}; restart the app to "
                                       "restore the replica's copy first")
                self.keeper.want_running = False
                self.keeper.set_state(State.FAILED)
                logger.error("litestream %r: NOT replicating: %s, and the app has it open, "
                             "so it cannot be replaced now. Fix: restart the app; it sets "
                             "the file aside and restores the replica's before it starts",
                             self.settings.name, stale[0].describe())
                return
        else:
            await guard(self.settings, self._env, binary=self.binary,
                        config_path=self.config_path,
                        on_start=lambda: self.keeper.set_state(State.RESTORING))
        if self.settings.restore_if_missing:
            await restore_missing(self.binary, self.config_path, self.settings, self._env,
                                  on_start=lambda: self.keeper.set_state(State.RESTORING))
        if not self.keeper.closing:
            await self.keeper.start()
            if self.lease is not None and self.keeper.task_group is not None:
                self.keeper.task_group.start_soon(functools.partial(
                    hold_the_lease, self.lease, self.keeper, give_up=self._stopping,
                    behind=self._moved_on))

    async def _moved_on(self) -> str | None:
        """With the lease won back after a fence: why the files here are no longer in
        step with the replica (another host wrote meanwhile), or None. A replica whose
        positions cannot be read (S3's bad day, which fenced us) is asked a few times;
        still unknown, it counts as moved on: staying fenced is safe, guessing is not."""
        delay = 1.0
        for attempt in range(1, _MOVED_ON_ATTEMPTS + 1):
            try:
                stale = await anyio.to_thread.run_sync(functools.partial(
                    find_stale, self.settings, self._env, binary=self.binary,
                    config_path=self.config_path))
            except PositionError as exc:
                if attempt == _MOVED_ON_ATTEMPTS:
                    return ("the replica's position could not be read after the lease was "
                            f"won back, so it may have moved on ({exc})")
                await anyio.sleep(delay)
                delay *= 2
                continue
            if not stale:
                return None
            return f"the replica moved on while this app was fenced: {stale[0].describe()}"
        return None

    def _stopping(self) -> bool:
        return self.keeper.closing or self._close_requested.is_set()

    async def _follow(self) -> bool:
        """True once another worker leads and its Litestream answers."""
        if not await self.election.find_leader():
            return False
        self.keeper.set_state(State.STANDBY)
        leader = self.election.leader
        logger.info("litestream %r: standing by; worker %s leads (litestream pid %s)",
                    self.settings.name, leader.get("pid"), leader.get("litestream_pid"))
        return True

    async def _watch_leader(self) -> None:
        """A standby takes over as soon as the leader lock is free."""
        while not self.keeper.closing:
            await anyio.sleep(_LOCK_POLL)
            if (self.role is not Role.STANDBY or not self.keeper.want_running
                    or self.keeper.closing):
                continue
            if not self.leadership.try_lead():
                continue
            logger.warning("litestream %r: the leading worker (pid %s) is gone; taking over",
                           self.settings.name, self.election.leader.get("pid"))
            try:
                await self._lead(takeover=True)
            except Exception as exc:
                # Let another worker try: a lock held with nothing running would
                # leave the database unreplicated for good.
                logger.error("litestream %r: taking over failed: %s; standing by again",
                             self.settings.name, exc)
                self.election.stand_by()
                self.keeper.set_state(State.STANDBY)
                self.leadership.resign()

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
                if (self.keeper.closing or self.state in _NOT_REPLICATING
                        or not self.keeper.want_running):
                    raise SyncError(f"Litestream {self.settings.name!r} is "
                                    f"{self.state.value}: nothing replicates {path}")
                await anyio.sleep(0.01)
            control = self.election.control()
            if control is None:
                raise SyncError("no control socket known for the leading worker")
            if not path.exists():
                return None  # nothing committed yet
            while True:
                try:
                    result = await control.sync_durably(
                        path, timeout=self.settings.flush_timeout)
                    break
                except ControlError as exc:
                    # A folder's new database: Litestream's watcher adds it within
                    # milliseconds of its creation.
                    if not (self._in_a_folder(path) and "not found" in str(exc)):
                        raise SyncError(f"sync of {path} failed: {exc}") from exc
                    await anyio.sleep(_NEW_DATABASE_POLL)
            self.health.note_position(path, result.txid, result.replicated_txid)
            return result.replicated_txid
        assert scope.cancelled_caught
        raise SyncError(f"the replica of {path} did not confirm within "
                        f"{self.settings.flush_timeout}s")

    # -- health and status ------------------------------------------------------------

    async def _poll_health(self) -> None:
        # The first poll runs at once, beside the app's own startup rather than
        # before it: positions appear within milliseconds of readiness.
        while not self.keeper.closing:
            await self.refresh_health()
            if self.role is Role.LEADER and self.running:
                self.health.log_changes(time.time())  # standbys would repeat it
            await anyio.sleep(self.settings.health_interval)

    async def refresh_health(self) -> None:
        """Ask Litestream (ours, or the leader's) for every database's positions."""
        if self.role is Role.STANDBY:
            if not self.election.leader_running():
                return
        elif not self.running:
            return
        control = self.election.control()
        if control is not None:
            self.election.leader_ok = await self.health.poll(control)

    def _metrics_address(self) -> str | None:
        """Where Litestream's own metrics are: ours, or the leader's on a standby."""
        if not self.running:
            return None
        if self.role is Role.STANDBY:
            address = self.election.leader.get("metrics_addr")
            return address if isinstance(address, str) else None
        return self.metrics_addr

    # -- small things -------------------------------------------------------------------

    def _publish(self) -> None:
        """On every state change (Keeper.set_state): the leader tells the standbys."""
        if self.role is Role.LEADER and self.leadership.leading:
            keeper = self.keeper
            self.leadership.publish(
                state=keeper.state.value, socket=str(self.control.socket_path),
                litestream_pid=self.pid, restarts=keeper.restarts, version=keeper.version,
                last_exit_code=keeper.last_exit_code, name=self.settings.name,
                metrics_addr=self.metrics_addr,
                verification=(self.verifier.last.to_json()
                              if self.verifier.last else None),
                lease=self.lease.to_json() if self.lease else None,
                lease_owner=self.lease.store.owner if self.lease else None,
                boot_id=BOOT_ID,
            )

    def _in_a_folder(self, path: Path) -> bool:
        return any(db.holds(path) for db in self.health.folders)

    def _paths(self) -> str:
        return ", ".join(db.where for db in self.settings.databases)

