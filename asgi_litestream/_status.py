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
    """Replication position of one database, refreshed by the background poller."""

    database: Database
    litestream_status: str | None = None  # "replicating" / "open" / "stopped" from /list
    txid: int | None = None
    replicated_txid: int | None = None
    last_sync_at: str | None = None  # as Litestream reports it (RFC 3339)
    caught_up_at: float | None = None  # monotonic time the replica last had every txid
    error: str | None = None
    polled_at: float | None = None
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))

    def lag(self) -> int | None:
        if self.txid is None or self.replicated_txid is None:
            return None
        return max(self.txid - self.replicated_txid, 0)

    def behind_seconds(self, now: float) -> float | None:
        """How long the replica has been missing data; 0 when it has everything."""
        if self.lag() == 0:
            return 0.0
        if self.caught_up_at is None:
            return None
        return now - self.caught_up_at

    def healthy(self, now: float, max_lag_seconds: float) -> bool:
        if self.error is not None or self.polled_at is None:
            return False
        behind = self.behind_seconds(now)
        return behind is not None and behind <= max_lag_seconds

    def to_json(self, now: float, max_lag_seconds: float) -> dict[str, Any]:
        return {
            "path": str(self.database.path),
            "replica": self.database.replica,
            "litestream_status": self.litestream_status,
            "txid": self.txid,
            "replicated_txid": self.replicated_txid,
            "lag": self.lag(),
            "behind_s": _round(self.behind_seconds(now)),
            "last_sync_at": self.last_sync_at,
            "healthy": self.healthy(now, max_lag_seconds),
            "error": self.error,
            "last_errors": list(self.last_errors),
        }


def uptime(started_at: float | None) -> float | None:
    return None if started_at is None else _round(time.monotonic() - started_at)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
