"""How a worker takes its place among the workers of its databases: join them, then
lead (take the lease, check and restore the files, start Litestream) or stand by, and
take over as soon as the leader is gone."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from .._config.settings import Settings
from .._exceptions import StartupError
from .._locks.workers import BOOT_ID, Leadership
from .._restore.boot import restore_missing
from .._state import Role, State
from .election import Election
from .guard import Stale, find_stale, guard
from .keeper import Keeper

if TYPE_CHECKING:
    from .._locks.lease_keeper import LeaseKeeper

logger = logging.getLogger("asgi_litestream")

LOCK_POLL = 0.1


class StoppedEarly(StartupError):
    """The server shut down before the databases were in place: not a failure."""


class Joining:
    """Join, lead or follow, take over: the role changes of one service."""

    def __init__(self, settings: Settings, *, env: Mapping[str, str], binary: Path,
                 config_path: Path, leadership: Leadership, election: Election,
                 keeper: Keeper, lease: LeaseKeeper | None,
                 app_started: Callable[[], bool], stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self._env = env
        self._binary = binary
        self._config_path = config_path
        self.leadership = leadership
        self.election = election
        self.keeper = keeper
        self.lease = lease
        self._app_started = app_started
        self._stopping = stopping
        self._scope: anyio.CancelScope | None = None  # take_place()'s, for cut_short()

    async def take_place(self) -> Exception | None:
        """Join, lead or follow; the startup error, if any. cut_short() ends it
        (StoppedEarly): a shutdown never waits out the lease, the reads or a restore."""
        with anyio.CancelScope() as self._scope:
            try:
                await self.join()
            except Exception as exc:
                return exc
        if self._scope.cancelled_caught:
            return StoppedEarly(f"Litestream {self.settings.name!r} was stopped "
                                "before its databases were in place")
        return None

    def cut_short(self) -> None:
        """The app is shutting down: stop joining (waiting for the lease, restoring)."""
        if self._scope is not None:
            self._scope.cancel()

    async def join(self) -> None:
        """Lead or stand by, within startup_timeout (+ restore_timeout); StartupError."""
        settings = self.settings
        limit = settings.startup_timeout
        if settings.restore_if_missing:
            limit += settings.restore_timeout
        if self.lease is not None:
            limit = math.inf  # the lease may be held for as long as its holder runs
        try:
            with anyio.fail_after(limit):
                # File locks held by other processes: nothing to await but time.
                while not self.leadership.join():  # noqa: ASYNC110
                    await anyio.sleep(LOCK_POLL)  # a leader is checking who still writes
                # Lead if the lock is free; else wait for the leader to be ready, or
                # for the lock.
                while not self.leadership.try_lead():
                    if await self.follow():
                        return
                    await anyio.sleep(LOCK_POLL)
                await self.lead()
        except TimeoutError:
            if self.election.role is Role.LEADER:
                raise StartupError(
                    f"this worker could not restore and start Litestream for {self._paths()} "
                    f"within {limit:g}s (restore_timeout + startup_timeout). Fix: see the "
                    "lines above; raise restore_timeout for a large restore") from None
            raise StartupError(
                f"the worker leading Litestream for {self._paths()} (pid "
                f"{self.election.leader.pid}) was not replicating within {limit:g}s. "
                "Fix: check that worker's logs"
            ) from None

    async def lead(self, *, takeover: bool = False) -> None:
        settings, keeper = self.settings, self.keeper
        # Who led before us, read before we publish over it (see lease_heir).
        previous = self.leadership.leader_info()
        self.election.lead()
        logger.info("litestream %r: this worker (pid %d) leads replication of %s",
                    settings.name, os.getpid(), self._paths())
        if self.lease is not None:
            keeper.set_state(State.WAITING_FOR_LEASE)
            heir = None if previous is None else previous.lease_heir(BOOT_ID)
            if not await self.lease.acquire(give_up=self._stopping, inherit_from=heir,
                                            fail_fast=not takeover):
                return
        if takeover and self._app_started():
            # The app holds connections to these files: a stale one cannot be swapped
            # beneath it. Stay down and say so; a restart restores it first.
            stale = await self._find_stale()
            if stale:
                # Never started again here, not even for the final flush: that would
                # replicate the stale file over the replica.
                keeper.refuse(f"{stale[0].describe()}; restart the app to restore the "
                              "replica's copy first")
                logger.error("litestream %r: NOT replicating: %s, and the app has it open, "
                             "so it cannot be replaced now. Fix: restart the app; it sets "
                             "the file aside and restores the replica's before it starts",
                             settings.name, stale[0].describe())
                return
        else:
            await guard(settings, dict(self._env), binary=self._binary,
                        config_path=self._config_path,
                        on_start=lambda: keeper.set_state(State.RESTORING))
        if settings.restore_if_missing:
            await restore_missing(self._binary, self._config_path, settings, dict(self._env),
                                  on_start=lambda: keeper.set_state(State.RESTORING))
        if not keeper.closing:
            await keeper.start()
            if self.lease is not None:
                from .fencing import hold_the_lease, moved_on  # with a lease only

                keeper.start_soon(functools.partial(
                    hold_the_lease, self.lease, keeper, give_up=self._stopping,
                    behind=functools.partial(moved_on, self._find_stale)))

    async def follow(self) -> bool:
        """True once another worker leads and its Litestream answers."""
        if not await self.election.find_leader():
            return False
        self.keeper.set_state(State.STANDBY)
        leader = self.election.leader
        logger.info("litestream %r: standing by; worker %s leads (litestream pid %s)",
                    self.settings.name, leader.pid, leader.litestream_pid)
        return True

    async def watch_leader(self) -> None:
        """A standby takes over as soon as the leader lock is free."""
        keeper = self.keeper
        while not keeper.closing:
            await anyio.sleep(LOCK_POLL)
            if (self.election.role is not Role.STANDBY or not keeper.want_running
                    or keeper.closing):
                continue
            if not self.leadership.try_lead():
                continue
            logger.warning("litestream %r: the leading worker (pid %s) is gone; taking over",
                           self.settings.name, self.election.leader.pid)
            try:
                await self.lead(takeover=True)
            except Exception as exc:
                # Let another worker try: a lock held with nothing running would
                # leave the database unreplicated for good.
                logger.error("litestream %r: taking over failed: %s; standing by again",
                             self.settings.name, exc)
                self.election.stand_by()
                keeper.set_state(State.STANDBY)
                self.leadership.resign()

    async def _find_stale(self) -> Sequence[Stale]:
        """The files here that are behind the replica (a thread: it asks the replica;
        with a copy of the environment, which a rotation may change meanwhile)."""
        return await anyio.to_thread.run_sync(functools.partial(
            find_stale, self.settings, dict(self._env), binary=self._binary,
            config_path=self._config_path))

    def _paths(self) -> str:
        return ", ".join(db.where for db in self.settings.databases)
