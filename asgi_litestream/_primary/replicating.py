"""The Litestream that replicates this worker's databases right now: ours when leading,
the leader's when standing by. Whether it runs, its positions (the health poll), a
durable sync through it, and where its metrics are."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio

from .._config.settings import Settings
from .._exceptions import SyncError
from .._litestream.control import ControlError
from .._state import Role, State
from .election import Election
from .health import HealthPoller
from .keeper import Keeper

_NEW_DATABASE_POLL = 0.05
# States in which a durable wait fails at once rather than wait for a restart.
_NOT_REPLICATING = (State.FAILED, State.WAITING_FOR_LEASE, State.FENCED)


class Replicating:
    """Asks the Litestream that replicates now (through Election.control())."""

    def __init__(self, settings: Settings, *, keeper: Keeper, election: Election,
                 health: HealthPoller, metrics_addr: str | None) -> None:
        self.settings = settings
        self.keeper = keeper
        self.election = election
        self.health = health
        self.metrics_addr = metrics_addr  # our Litestream's /metrics (or none)

    @property
    def running(self) -> bool:
        """True while the databases are being replicated, by us or by the leader."""
        if self.election.role is Role.STANDBY:
            return self.election.leader_ok
        return self.keeper.state is State.RUNNING

    async def poll_health(self, *, after_poll: Callable[[], None] = lambda: None) -> None:
        """The service's task: refresh the positions every health_interval (then
        ``after_poll``)."""
        # The first poll runs at once, beside the app's own startup rather than
        # before it: positions appear within milliseconds of readiness.
        while not self.keeper.closing:
            await self.refresh_health()
            if self.election.role is Role.LEADER and self.running:
                self.health.log_changes(time.time())  # standbys would repeat it
                after_poll()
            await anyio.sleep(self.settings.health_interval)

    async def refresh_health(self) -> None:
        """Ask Litestream (ours, or the leader's) for every database's positions."""
        if self.election.role is Role.STANDBY:
            if not self.election.leader_running():
                return
        elif not self.running:
            return
        control = self.election.control()
        if control is not None:
            self.election.heard_from_leader(await self.health.poll(control))

    def metrics_address(self) -> str | None:
        """Where Litestream's own metrics are: ours, or the leader's on a standby."""
        if not self.running:
            return None
        if self.election.role is Role.STANDBY:
            return self.election.leader.metrics_addr
        return self.metrics_addr

    async def sync_once(self, path: Path) -> int | None:
        """One round of group commit for one database: POST /sync with wait."""
        keeper, timeout = self.keeper, self.settings.flush_timeout
        with anyio.move_on_after(timeout) as scope:
            while True:
                while not self.running:  # a restart takes milliseconds: wait it out
                    if (keeper.closing or keeper.state in _NOT_REPLICATING
                            or not keeper.want_running):
                        raise SyncError(f"Litestream {self.settings.name!r} is "
                                        f"{keeper.state.value}: nothing replicates {path}")
                    await anyio.sleep(0.01)
                control = self.election.control()
                if control is None:
                    raise SyncError("no control socket known for the leading worker")
                if not path.exists():
                    return None  # nothing committed yet
                child = keeper.child
                try:
                    result = await control.sync_durably(path, timeout=timeout)
                    break
                except ControlError as exc:
                    if keeper.child is not child or not self.running:
                        continue  # restarted under us (a rotation): ask the new one
                    # A folder's new database: Litestream's watcher adds it within
                    # milliseconds of its creation.
                    if not (self.in_a_folder(path) and "not found" in str(exc)):
                        raise SyncError(f"sync of {path} failed: {exc}") from exc
                    await anyio.sleep(_NEW_DATABASE_POLL)
            self.health.note_position(path, result.txid, result.replicated_txid)
            return result.replicated_txid
        assert scope.cancelled_caught
        raise SyncError(f"the replica of {path} did not confirm within {timeout}s")

    def in_a_folder(self, path: Path) -> bool:
        return any(db.holds(path) for db in self.health.folders)
