"""Where a replication service is in its life (:class:`State`) and which part a worker
plays (:class:`Role`): the words every layer uses, so they live below all of them."""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    """Whether this worker runs Litestream (leader) or relies on another that does."""

    LEADER = "leader"
    STANDBY = "standby"


class State(str, Enum):
    """Where the service is in its life."""

    STARTING = "starting"
    RESTORING = "restoring"  # restoring a missing database from its replica
    STANDBY = "standby"  # another worker leads; we take over if it goes
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed; waiting out the backoff before the next spawn
    STOPPING = "stopping"
    STOPPED = "stopped"  # stopped on purpose (stop_litestream / shutdown)
    FAILED = "failed"  # too many restarts in the window: stays down until started again
    WAITING_FOR_LEASE = "waiting_for_lease"  # another host holds the replica's lease
    FENCED = "fenced"  # our lease could have expired: stopped, never a second writer
