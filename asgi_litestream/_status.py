"""What the status route says: built from memory, never by asking a subprocess."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ._config import Database


class Role(str, Enum):
    """Whether this worker runs Litestream (leader) or relies on another that does."""

    LEADER = "leader"
    STANDBY = "standby"


class State(str, Enum):
    """Where the supervisor is in its life."""

    STARTING = "starting"
    RESTORING = "restoring"  # restoring a missing database from its replica
    STANDBY = "standby"  # another worker leads; we take over if it goes
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed; waiting out the backoff before the next spawn
    STOPPING = "stopping"
    STOPPED = "stopped"  # stopped on purpose (stop_litestream / shutdown)
    FAILED = "failed"  # too many restarts in the window: stays down until started again


@dataclass(slots=True, kw_only=True)
class DatabaseHealth:
    """Replication position of one database, refreshed by the background poller.

    Health is the *replication delay*: the age of the oldest change the replica
    does not hold yet. Each poll notes when it first saw a local position
    (``txid``); the delay is the time since the first noted position past
    ``replicated_txid`` was seen. Zero when the replica holds everything, about a
    sync interval under a steady write load, and growing only while replication
    really stalls. (Counting from the last moment the replica held *everything*
    instead reads a busy, healthy database as behind forever.) Positions are seen
    once per poll, so the delay may read up to one ``health_interval`` short.
    """

    database: Database
    litestream_status: str | None = None  # "replicating" / "open" / "stopped" from /list
    txid: int | None = None
    replicated_txid: int | None = None
    last_sync_at: str | None = None  # as Litestream reports it (RFC 3339)
    error: str | None = None
    polled_at: float | None = None
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    unhealthy_since: float | None = None  # monotonic; set while a stall is reported
    # (txid, monotonic time a poll first saw it), oldest first: local positions
    # the replica did not hold when last polled.
    _unreplicated: deque[tuple[int, float]] = field(default_factory=deque)

    def observe(self, txid: int, replicated_txid: int, now: float) -> None:
        """Record one successful poll's positions."""
        if self.txid is not None and txid < self.txid:
            self._unreplicated.clear()  # a different database file (restored, replaced)
        if txid > replicated_txid and (
            not self._unreplicated or txid > self._unreplicated[-1][0]
        ):
            self._unreplicated.append((txid, now))
        while self._unreplicated and self._unreplicated[0][0] <= replicated_txid:
            self._unreplicated.popleft()
        self.txid, self.replicated_txid = txid, replicated_txid
        self.error, self.polled_at = None, now

    def lag(self) -> int | None:
        if self.txid is None or self.replicated_txid is None:
            return None
        return max(self.txid - self.replicated_txid, 0)

    def delay(self, now: float) -> float | None:
        """Age of the oldest change the replica is missing; None before any poll."""
        if self.polled_at is None:
            return None
        if not self._unreplicated:
            return 0.0
        return now - self._unreplicated[0][1]

    def healthy(self, now: float, max_lag_seconds: float) -> bool | None:
        """False on a poll error or a delay past ``max_lag``; None (unknown) before
        the first poll."""
        if self.error is not None:
            return False
        delay = self.delay(now)
        return None if delay is None else delay <= max_lag_seconds

    def to_json(self, now: float, max_lag_seconds: float) -> dict[str, Any]:
        return {
            "path": str(self.database.path),
            "replica": self.database.replica,
            "litestream_status": self.litestream_status,
            "txid": self.txid,
            "replicated_txid": self.replicated_txid,
            "lag": self.lag(),
            "behind_s": _round(self.delay(now)),
            "last_sync_at": self.last_sync_at,
            "healthy": self.healthy(now, max_lag_seconds),
            "error": self.error,
            "last_errors": list(self.last_errors),
        }


def overall_health(databases: list[bool | None]) -> bool | None:
    """All healthy → True; any unhealthy → False; otherwise unknown (None)."""
    if any(healthy is False for healthy in databases):
        return False
    if any(healthy is None for healthy in databases):
        return None
    return True


def uptime(started_at: float | None) -> float | None:
    return None if started_at is None else _round(time.monotonic() - started_at)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
