"""The replication service: keeps one database set replicated for one worker.

It reads top to bottom, as an anyio service (``await task_group.start(service.serve)``)::

    serve()  join the database's workers (_locks/workers.py), then lead or follow
             (_primary/joining.py, _primary/election.py):
               lead:   with lease=True, take the lease in the replica first
                       (_locks/lease_keeper.py; the app already serves, readiness 503),
                       restore missing databases (_restore/boot.py), start Litestream
                       (_primary/keeper.py, which spawns _litestream/process.py) and
                       wait until it is ready
               follow: find the leading worker's Litestream ready
             ── started ──  the app runs; meanwhile, in the service's own task groups:
               keeper.keep_alive()  restart Litestream when it dies (_litestream/restart.py decides)
               watch_leader()       a standby takes over as soon as the leader is gone
               _poll_health()       refresh replication positions (_primary/health.py)
               hold_the_lease()     renew it; fence (kill Litestream) before it expires
                                    (_primary/fencing.py)
             ── close() ──  the one shielded cleanup, within shutdown_limit(): hand over,
               wait for the other workers to stop writing, flush every database, stop
               Litestream, release the locks (_primary/handover.py)

Every state change goes through Keeper.set_state(), which calls _publish() to tell
the other workers (a LeaderInfo). The app and the routes see it through a few
properties and status(), a frozen StatusSnapshot (_primary/status.py).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._config.settings import Settings
from .._exceptions import StartupError, SyncError
from .._litestream.commands import replicate_command
from .._litestream.control import ControlClient
from .._litestream.logs import LitestreamLog
from .._litestream.scrape import LitestreamScrape
from .._litestream.workdir import CONFIG_NAME, SOCKET_NAME
from .._locks.workers import Leadership
from .._state import Role, State
from .credentials import Credentials
from .election import Election
from .group_sync import DurableSyncs
from .handover import give_up_placing, hand_over_and_stop, shutdown_limit
from .health import HealthPoller
from .joining import Joining, StoppedEarly
from .keeper import Keeper
from .replicating import Replicating
from .status import ServiceFacts, StatusSnapshot, leader_info_of, status_key, status_of
from .verifying import LazyVerifier

if TYPE_CHECKING:
    from .._locks.lease_keeper import LeaseKeeper
    from .._restore.verify import Verification

logger = logging.getLogger("asgi_litestream")

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
        self.syncs: DurableSyncs | None = None  # made in serve(), in its task group
        self._env = settings.child_env(environ)
        self.keeper = Keeper(settings, command=replicate_command(binary, self.config_path),
                             env=self._env, control=self.control, log=self.log,
                             pass_fds=lambda: self.leadership.fds,
                             leading=lambda: self.role is Role.LEADER, on_change=self._publish,
                             on_position=lambda path, result: self.health.note_position(
                                 path, result.txid, result.replicated_txid))
        self.credentials = Credentials(
            settings, env=self._env, keeper=self.keeper, log=self.log,
            replicated=lambda: sum(h.replicated_txid or 0 for h in self.health.databases),
            on_change=self._publish)
        self.verifying = LazyVerifier(
            name=settings.name, binary=binary, config_path=self.config_path,
            databases=settings.databases, env=self._env, timeout=settings.restore_timeout,
            secrets=lambda: self.log.secrets, on_result=self._publish,
            control=lambda: self.election.control() if self.running else None)
        self.lease: LeaseKeeper | None = None
        if settings.lease:
            from .._locks.lease_keeper import LeaseKeeper  # the lease's code, only with one

            self.lease = LeaseKeeper.of(settings, self._env)
        if self.lease is not None:
            self.lease.guard(self.keeper)  # no Litestream starts here without the lease
        self.joining = Joining(settings, env=self._env, binary=binary,
                               config_path=self.config_path, leadership=self.leadership,
                               election=self.election, keeper=self.keeper, lease=self.lease,
                               app_started=lambda: self.app_started, stopping=self._stopping)
        self.replicating = Replicating(settings, keeper=self.keeper, election=self.election,
                                       health=self.health, metrics_addr=metrics_addr)
        self.scrape = LitestreamScrape()  # its /metrics, fetched in the background
        self._close_requested = anyio.Event()
        self._closed = anyio.Event()
        # Set once the databases are in place (lease held, files checked and restored,
        # Litestream running here or at the leader), or startup failed (wait_in_place).
        self._placed = anyio.Event()
        self._placed_error: Exception | None = None
        self.app_started = False  # the app runs on the files: never swap them now

    @property
    def role(self) -> Role | None:
        return self.election.role

    @property
    def running(self) -> bool:
        """True while the databases are being replicated, by us or by the leader."""
        return self.replicating.running

    @property
    def state(self) -> State:
        return self.keeper.state

    @property
    def pid(self) -> int | None:
        child = self.keeper.child
        return None if child is None else child.pid

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
                # The keeper's: Litestream's log pumps, the lease's renewals, durable
                # syncs. They outlive the watching tasks, through the final flush.
                self.keeper.attach(task_group)
                self.syncs = DurableSyncs(
                    (db.path for db in self.settings.databases if not db.is_folder),
                    self.replicating.sync_once, task_group,
                    in_folder=self.replicating.in_a_folder)
                if started_early:
                    task_status.started()
                try:
                    failure = await self.joining.take_place()
                    if failure is None:
                        self._placed.set()
                        async with anyio.create_task_group() as watching:
                            self._watch(watching)
                            if not started_early:
                                task_status.started()
                            await self._close_requested.wait()
                            watching.cancel_scope.cancel()
                finally:
                    # The one cleanup: shielded (a cancelled server still flushes) and
                    # bounded (it never hangs a shutdown).
                    with anyio.CancelScope(shield=True) as cleanup:
                        cleanup.deadline = anyio.current_time() + self.shutdown_limit()
                        await self._clean_up(placed=self._placed.is_set(), failure=failure)
                    if cleanup.cancelled_caught:
                        logger.error("litestream %r: shutdown did not finish within its "
                                     "limit; gave up waiting", self.settings.name)
                    task_group.cancel_scope.cancel()
        finally:
            if not self._placed.is_set():
                self._placed_error = StartupError(
                    f"Litestream {self.settings.name!r} stopped before its databases "
                    "were in place")
                self._placed.set()
            self._closed.set()
        if isinstance(failure, StoppedEarly):
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

    def _watch(self, task_group: anyio.abc.TaskGroup) -> None:
        """The tasks that run while the app does; cancelled before the final flush."""
        task_group.start_soon(self.keeper.keep_alive)
        task_group.start_soon(self.joining.watch_leader)
        task_group.start_soon(functools.partial(self.replicating.poll_health,
                                                after_poll=self.credentials.refusal.check_progress))
        if self.settings.access_key_id_file is not None:
            task_group.start_soon(self.credentials.watch_files)
        if self.settings.metrics_path is not None:
            # Prometheus scrapes every 15 s or more: no need to ask more often.
            task_group.start_soon(self.scrape.run, self.replicating.metrics_address,
                                  max(self.settings.health_interval, 10.0))
        if self.settings.verify_interval is not None:
            task_group.start_soon(self.verifying.get().every, self.settings.verify_interval,
                                  lambda: self.role is Role.LEADER and self.running)

    async def _clean_up(self, *, placed: bool, failure: Exception | None) -> None:
        """Placed: hand over, flush and stop. Not (a failure, a cancellation): stop
        what may have started and give the locks back. Then close the sockets."""
        try:
            if placed:
                await hand_over_and_stop(role=self.role, keeper=self.keeper,
                                         leadership=self.leadership, lease=self.lease,
                                         settings=self.settings)
            else:
                await give_up_placing(keeper=self.keeper, lease=self.lease,
                                      leadership=self.leadership)
                if failure is not None:
                    self._placed_error = failure
                    self._placed.set()
        finally:
            await self.election.aclose()

    def shutdown_limit(self) -> float:
        """How long the cleanup may take (_primary/handover.py)."""
        return shutdown_limit(self.settings, lease=self.lease is not None,
                              databases=len(self.health.paths()))

    async def wait_in_place(self) -> None:
        """Return once the databases are in place for the app; raise startup's error."""
        await self._placed.wait()
        if self._placed_error is not None:
            raise self._placed_error

    def placed(self) -> bool:
        """Whether wait_in_place() returns (or raises) at once."""
        return self._placed.is_set()

    def _stopping(self) -> bool:
        return self.keeper.closing or self._close_requested.is_set()

    def note_app_start(self) -> None:
        """The app's startup begins: from now on no file may be swapped beneath it."""
        self.app_started = True

    async def close(self) -> None:
        """Shutdown: return once serve() has flushed and stopped Litestream (or, still
        getting the databases in place behind the gate, has given that up), or past
        shutdown_limit(). serve() does the work, shielded: a cancelled close() leaves
        it running, and the task group that runs serve() waits for it."""
        if not self._placed.is_set():
            self.joining.cut_short()
        self._close_requested.set()
        with anyio.move_on_after(self.shutdown_limit() + 1.0):
            await self._closed.wait()

    async def sync(self, *, timeout: float | None = None,
                   database: str | os.PathLike[str] | None = None) -> dict[str, int]:
        """Wait until the replica holds everything committed before this call."""
        if self.syncs is None:
            raise SyncError(f"Litestream {self.settings.name!r} has not started")
        timeout = self.settings.flush_timeout if timeout is None else timeout
        return await self.syncs.wait(timeout, database)

    def status(self) -> StatusSnapshot:
        """The status snapshot, as the status route serves it."""
        return status_of(name=self.settings.name, running=self.running, keeper=self.keeper,
                         election=self.election, health=self.health, log=self.log,
                         verified=self.verifying.last, lease=self.lease,
                         credentials=self.credentials.status())

    def status_key(self) -> tuple[object, ...]:
        """Changes whenever status() would (the routes reuse their rendered body)."""
        return status_key(running=self.running, keeper=self.keeper, election=self.election,
                          health=self.health, log=self.log, lease=self.lease,
                          credentials=self.credentials.changes)

    def litestream_env(self) -> dict[str, str]:
        return dict(self._env)

    def secrets(self) -> tuple[str, ...]:
        return self.log.secrets

    def facts(self) -> ServiceFacts:
        """This worker's own counters, for the app and the metrics route."""
        return ServiceFacts.of(self.keeper, self.syncs, self.scrape.text)

    def history(self) -> dict[str, list[tuple[float, float | None]]]:
        """Per listed database: (unix time, replication delay) over the last hour."""
        return self.health.history()

    async def verify(self) -> Verification:
        return await self.verifying.get().verify()

    async def start(self) -> None:
        await self.keeper.start()

    async def stop(self) -> bool:
        return await self.keeper.stop()

    async def rotate_credentials(self, *, access_key_id: str, secret_access_key: str,
                                 session_token: str | None = None) -> None:
        await self.credentials.rotate(access_key_id, secret_access_key,
                                      session_token=session_token)

    def _publish(self) -> None:
        """On every state change (Keeper.set_state): the leader tells the standbys."""
        if self.role is Role.LEADER and self.leadership.leading:
            self.leadership.publish(leader_info_of(
                name=self.settings.name, keeper=self.keeper, socket=self.control.socket_path,
                metrics_addr=self.replicating.metrics_addr, verified=self.verifying.last,
                lease=self.lease, credentials=self.credentials.status()))
