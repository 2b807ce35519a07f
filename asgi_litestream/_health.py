"""Replication health: how far behind each replica is, polled in the background.

A request never waits on Litestream: the poller asks the control socket every
``health_interval`` and the status snapshot reads what it found.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._control import ControlClient, ControlError
from ._databases import Database
from ._sqlite import in_wal_mode

logger = logging.getLogger("asgi_litestream")

_HISTORY_EVERY = 10.0  # seconds between two samples of the delay
_HISTORY_SAMPLES = 360  # an hour of them


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
    journal_warned: bool = False  # warned that the file left WAL mode
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

    def to_json(self, now: float, max_lag_seconds: float,
                last_errors: list[str]) -> dict[str, Any]:
        return {
            "path": str(self.database.path),
            "replica": self.database.replica,
            "litestream_status": self.litestream_status,
            "txid": self.txid,
            "replicated_txid": self.replicated_txid,
            "lag": self.lag(),
            "behind_s": None if (delay := self.delay(now)) is None else round(delay, 3),
            "last_sync_at": self.last_sync_at,
            "healthy": self.healthy(now, max_lag_seconds),
            "error": self.error,
            "last_errors": last_errors,
        }


class HealthPoller:
    """Refreshes every database's positions from one control socket."""

    def __init__(self, databases: tuple[Database, ...], *, name: str, max_lag: float) -> None:
        self.name = name
        self.max_lag = max_lag
        self.databases = [DatabaseHealth(database=db) for db in databases]
        self.changes = 0  # bumped by every poll, for the status route's cache
        # Per database, the delay over the last hour (for the status page's chart).
        self._history = {str(db.path): deque[tuple[float, float | None]](
            maxlen=_HISTORY_SAMPLES) for db in databases}

    async def poll(self, control: ControlClient) -> bool:
        """One round; False when the control socket did not answer at all."""
        self.changes += 1
        try:
            listed = {d.get("path"): d for d in await control.databases()}
        except ControlError as exc:
            for health in self.databases:
                health.error = str(exc)
            return False
        for health in self.databases:
            await self._poll_one(control, health, listed.get(str(health.database.path), {}))
            self._check_journal(health)
        self._sample()
        return True

    def _check_journal(self, health: DatabaseHealth) -> None:
        wal = in_wal_mode(health.database.path)
        if wal is False and not health.journal_warned:
            logger.warning(
                "litestream %r: %s is not in WAL mode, so Litestream cannot replicate its "
                "changes. Fix: remove any PRAGMA journal_mode other than WAL from the app's "
                "connections (Litestream sets WAL itself)", self.name, health.database.path)
        if wal is not None:
            health.journal_warned = not wal

    def _sample(self) -> None:
        now, wall = time.monotonic(), time.time()
        for health in self.databases:
            samples = self._history[str(health.database.path)]
            if not samples or wall - samples[-1][0] >= _HISTORY_EVERY:
                samples.append((wall, health.delay(now)))

    def history(self) -> dict[str, list[tuple[float, float | None]]]:
        """Per database: (unix time, replication delay) over the last hour."""
        return {path: list(samples) for path, samples in self._history.items()}

    async def _poll_one(self, control: ControlClient, health: DatabaseHealth,
                        listed: dict[str, Any]) -> None:
        path = health.database.path
        health.litestream_status = listed.get("status")
        health.last_sync_at = listed.get("last_sync_at") or health.last_sync_at
        if not path.exists():
            health.observe(0, 0, time.monotonic())  # nothing committed: nothing to ship
            return
        try:
            # Without wait this returns at once with both positions; a hung replica
            # shows up as a timeout here rather than as silence.
            result = await control.sync(path, wait=False, timeout=5)
        except ControlError as exc:
            health.error = str(exc)
            return
        health.observe(result.txid, result.replicated_txid, time.monotonic())

    def log_changes(self, now: float) -> None:
        """One warning when a database's replication stalls, one line when it
        recovers: under a bare server an operator sees an outage and its end."""
        for health in self.databases:
            healthy = health.healthy(now, self.max_lag)
            where = (self.name, health.database.path, health.database.replica)
            if healthy is False and health.unhealthy_since is None:
                health.unhealthy_since = now
                why = (f"polling it failed: {health.error}" if health.error is not None
                       else f"the replica misses {health.lag()} transaction(s), the oldest "
                            f"for {health.delay(now) or 0:.1f}s")
                logger.warning("litestream %r: replication of %s to %s is stalled: %s "
                               "(max_lag %ss)", *where, why, self.max_lag)
            elif healthy and health.unhealthy_since is not None:
                logger.info("litestream %r: replication of %s to %s recovered after %.1fs "
                            "(delay now %.1fs)", *where, now - health.unhealthy_since,
                            health.delay(now) or 0.0)
                health.unhealthy_since = None

    def snapshot(self, now: float, errors_of: Callable[[str], list[str]]
                 ) -> list[dict[str, Any]]:
        return [h.to_json(now, self.max_lag, errors_of(h.database.path.name))
                for h in self.databases]


def overall_health(databases: list[bool | None]) -> bool | None:
    """All healthy → True; any unhealthy → False; otherwise unknown (None)."""
    if any(healthy is False for healthy in databases):
        return False
    if any(healthy is None for healthy in databases):
        return None
    return True
