"""The status snapshot: what the status route serves (:class:`StatusSnapshot`), built
from memory only, by ReplicationService.status().

Vocabulary: the *status route* (``/_litestream/status``) serves the *status snapshot*;
each database's part of it is its *health* (:class:`~.health.DatabaseStatus`). Its JSON
(``to_json``) is public API: its keys, their order and their values are pinned by tests.
A standby shows the leader's Litestream, as the leader published it (LeaderInfo).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._litestream.logs import LitestreamLog
from .._locks.leader_info import CredentialsStatus, LeaderInfo, LeaseStatus
from .._locks.workers import BOOT_ID
from .._state import Role, State
from .database_health import DatabaseStatus
from .election import Election
from .group_sync import DurableSyncs, SyncStats
from .health import HealthPoller
from .keeper import Keeper

if TYPE_CHECKING:
    from .._locks.lease_keeper import LeaseKeeper
    from .._restore.verify import Verification


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationStatus:
    """The last verification of the backup (ours, or the leader's), with its age."""

    ok: bool | None
    duration_s: float | None
    reason: str | None
    age_s: float | None  # since it began; None when its time does not parse
    published: Mapping[str, Any]  # its JSON (Verification.to_json()), shown as it is

    @classmethod
    def of(cls, found: Mapping[str, Any] | None, now: datetime) -> VerificationStatus | None:
        """From the verification's JSON; None when there is none."""
        if not found:
            return None
        age: float | None = None
        at = found.get("at")
        if isinstance(at, str):
            try:
                age = round((now - datetime.fromisoformat(at.replace("Z", "+00:00"))
                             ).total_seconds(), 1)
            except (ValueError, TypeError):  # garbled, or without a time zone
                age = None
        ok, duration, reason = found.get("ok"), found.get("duration_s"), found.get("reason")
        return cls(ok=ok if isinstance(ok, bool) else None,
                   duration_s=duration if isinstance(duration, (int, float))
                   and not isinstance(duration, bool) else None,
                   reason=reason if isinstance(reason, str) else None,
                   age_s=age, published=found)

    def to_json(self) -> dict[str, Any]:
        return {**self.published, "age_s": self.age_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSnapshot:
    """What the status route serves: this worker's view of replication."""

    name: str
    running: bool  # the databases are being replicated (by us, or by the leader)
    state: State
    role: Role | None
    leader_pid: int | None
    worker_pid: int
    healthy: bool | None  # every database healthy; None: not known yet
    pid: int | None  # the Litestream that replicates (the leader's on a standby)
    uptime_s: float | None
    restarts: int
    last_exit_code: int | None
    last_errors: tuple[str, ...]
    last_flush_ok: bool | None
    version: str | None
    verification: VerificationStatus | None
    lease: LeaseStatus | None
    databases: tuple[DatabaseStatus, ...]
    # The S3 keys Litestream runs with (the leader's, on a standby): where from, when
    # loaded, refused or not; never the keys themselves.
    credentials: CredentialsStatus | None = None
    # The unix time the databases' figures are as of (the last health poll); None: not
    # polled yet. Not in the JSON: the status page reckons its relative times from it.
    as_of: float | None = None

    def to_json(self, *, databases: bool = True) -> dict[str, Any]:
        """The status route's JSON (``databases=False``: all but the last key, for a
        caller that encodes the databases' part once per poll)."""
        out: dict[str, Any] = {
            "name": self.name,
            "status": "running" if self.running else "down",
            "state": self.state.value,
            "role": None if self.role is None else self.role.value,
            "leader_pid": self.leader_pid,
            "worker_pid": self.worker_pid,
            "healthy": self.healthy,
            "pid": self.pid,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_errors": list(self.last_errors),
            "last_flush_ok": self.last_flush_ok,
            "version": self.version,
            "verification": None if self.verification is None else self.verification.to_json(),
            "lease": None if self.lease is None else self.lease.to_json(),
            "credentials": None if self.credentials is None else self.credentials.to_json(),
        }
        if databases:
            out["databases"] = [db.to_json() for db in self.databases]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceFacts:
    """This worker's own counters, beside the status snapshot (the app's Supervisor
    and the metrics route read them)."""

    restarts: int
    version: str | None
    last_flush_ok: bool | None
    last_flush_seconds: float | None
    sync_stats: SyncStats  # live: durable waits, as group commit counts them
    sync_rounds: int
    litestream_metrics: str  # Litestream's own series, from the last background scrape

    @classmethod
    def of(cls, keeper: Keeper, syncs: DurableSyncs | None, litestream_metrics: str
           ) -> ServiceFacts:
        return cls(restarts=keeper.restarts, version=keeper.version,
                   last_flush_ok=keeper.last_flush_ok,
                   last_flush_seconds=keeper.last_flush_seconds,
                   sync_stats=SyncStats() if syncs is None else syncs.stats,
                   sync_rounds=0 if syncs is None else syncs.rounds,
                   litestream_metrics=litestream_metrics)


def status_of(*, name: str, running: bool, keeper: Keeper, election: Election,
              health: HealthPoller, log: LitestreamLog, verified: Verification | None,
              lease: LeaseKeeper | None, credentials: CredentialsStatus | None = None
              ) -> StatusSnapshot:
    """The status snapshot of one service, now. Keys the replica refuses make it
    unhealthy at once: nothing replicates, whatever the lag says yet."""
    databases = health.snapshot(log.errors_of, log.changes)
    standby = election.role is Role.STANDBY
    leader = election.leader
    child = keeper.child
    if standby:
        pid, restarts, exit_code = leader.litestream_pid, leader.restarts, leader.last_exit_code
        version, verification, lease_status = leader.version, leader.verification, leader.lease
        credentials = leader.credentials or credentials
    else:
        pid = None if child is None else child.pid
        restarts, exit_code, version = keeper.restarts, keeper.last_exit_code, keeper.version
        verification = None if verified is None else verified.to_json()
        lease_status = None if lease is None else lease.status()
    return StatusSnapshot(
        name=name, running=running, state=keeper.state, role=election.role,
        leader_pid=leader.pid, worker_pid=os.getpid(),
        healthy=(False if not running or (credentials is not None and credentials.rejected)
                 else health.overall()),
        pid=pid,
        uptime_s=round(time.monotonic() - child.started_at, 3)
        if running and child is not None else None,
        restarts=restarts, last_exit_code=exit_code, last_errors=tuple(log.last_errors),
        last_flush_ok=keeper.last_flush_ok, version=version,
        verification=VerificationStatus.of(verification, datetime.now(timezone.utc)),
        lease=lease_status, databases=databases, as_of=health.as_of,
        credentials=credentials)


def status_key(*, running: bool, keeper: Keeper, election: Election, health: HealthPoller,
               log: LitestreamLog, lease: LeaseKeeper | None, credentials: int = 0
               ) -> tuple[object, ...]:
    """Changes whenever status_of() would: state, positions, errors, and every 100 ms
    (uptime), so the status route can reuse its rendered body."""
    child = keeper.child
    return (keeper.state, None if child is None else child.pid, keeper.restarts,
            election.role, lease.lease if lease else None, election.leader_ok,
            health.changes, log.changes, int(time.monotonic() * 10), running, credentials)


def leader_info_of(*, name: str, keeper: Keeper, socket: Path, metrics_addr: str | None,
                   verified: Verification | None, lease: LeaseKeeper | None,
                   credentials: CredentialsStatus | None = None) -> LeaderInfo:
    """What the leading worker publishes to the others: what its status would show."""
    child = keeper.child
    return LeaderInfo(
        pid=os.getpid(), state=keeper.state, socket=str(socket),
        litestream_pid=None if child is None else child.pid, restarts=keeper.restarts,
        version=keeper.version, last_exit_code=keeper.last_exit_code, name=name,
        metrics_addr=metrics_addr, verification=verified.to_json() if verified else None,
        lease=lease.status() if lease else None,
        lease_owner=lease.store.owner if lease else None, boot_id=BOOT_ID,
        credentials=credentials)
