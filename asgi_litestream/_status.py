"""What the status route says: built from memory, never by asking a subprocess."""

from __future__ import annotations

import time
from enum import Enum


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


def uptime(started_at: float | None) -> float | None:
    return None if started_at is None else round(time.monotonic() - started_at, 3)
