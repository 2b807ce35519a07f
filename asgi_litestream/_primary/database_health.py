"""One database's replication health: what the poller tracks (:class:`DatabaseHealth`)
and the frozen record the status serves (:class:`DatabaseStatus`), with the reading of
Litestream's sync times they need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config.databases import Database
from .._litestream.rfc3339 import unix_time

_WHOLE_SECONDS: dict[str, float] = {}  # "2026-09-21T14:13:20" → its unix time


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseStatus:
    """One database's part of the status snapshot, as of the last poll."""

    path: str
    replica: str  # redacted
    litestream_status: str | None = None
    txid: int | None = None
    replicated_txid: int | None = None
    lag: int | None = None  # Litestream transactions the replica misses
    behind_s: float | None = None  # the replication delay (DatabaseHealth.delay)
    last_sync_at: str | None = None
    healthy: bool | None = None  # None: unknown (not polled yet)
    error: str | None = None
    last_errors: tuple[str, ...] = ()  # Litestream's, about this database

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "replica": self.replica,
                "litestream_status": self.litestream_status, "txid": self.txid,
                "replicated_txid": self.replicated_txid, "lag": self.lag,
                "behind_s": self.behind_s, "last_sync_at": self.last_sync_at,
                "healthy": self.healthy, "error": self.error,
                "last_errors": list(self.last_errors)}


@dataclass(slots=True, kw_only=True)
class DatabaseHealth:
    """Replication health of one database, refreshed by the background poller.

    Health is the *replication delay*, read from Litestream's ``last_sync_at``: the
    last moment it confirmed that the replica held everything the database had
    when that sync began. Litestream records it after every successful replica
    sync, and syncs an idle database too (every sync interval or two), so the age
    of ``last_sync_at`` is an upper bound of the age of the oldest change the
    replica misses: about a sync interval when healthy, under load or idle, and
    growing only while replication stalls (a hung or failing replica). An idle
    database whose replica is down stays healthy: it has nothing to lose.
    One ``GET /list`` answers it for every database at once.
    """

    database: Database
    replica: str = ""  # the redacted replica URL, computed once (a thousand per render)
    name: str = ""  # the file's name, as Litestream's log lines name it (computed once)
    litestream_status: str | None = None  # "replicating" / "open" / "stopped" from /list
    last_sync_at: str | None = None  # as Litestream reports it (RFC 3339)
    synced_at: float | None = None  # last_sync_at as a unix time
    first_seen: float | None = None  # unix time this database was first listed
    # Positions from the last POST /sync for this database (the poller's round robin,
    # a durable write, the final flush): informative, not the health measure.
    txid: int | None = None
    replicated_txid: int | None = None
    error: str | None = None
    polled_at: float | None = None
    journal_warned: bool = False  # warned that the file left WAL mode
    unhealthy_since: float | None = None  # monotonic; set while a stall is reported

    def __post_init__(self) -> None:
        self.replica, self.name = self.database.replica, self.database.path.name

    def observe(self, listed: dict[str, Any], now: float) -> None:
        """Record this database's entry of one ``GET /list`` (``now``: unix time)."""
        self.litestream_status = listed.get("status")
        stamp = listed.get("last_sync_at")
        if stamp != self.last_sync_at:
            self.last_sync_at = stamp
            self.synced_at = _unix_time(stamp) if isinstance(stamp, str) else None
        if self.first_seen is None:
            self.first_seen = now
        self.error, self.polled_at = None, now

    def lag(self) -> int | None:
        if self.txid is None or self.replicated_txid is None:
            return None
        return max(self.txid - self.replicated_txid, 0)

    def delay(self, now: float) -> float | None:
        """Seconds since the replica last held everything; None before any poll."""
        if self.polled_at is None:
            return None
        since = self.synced_at if self.synced_at is not None else self.first_seen
        if since is None:
            return None
        if self.synced_at is None and _empty(self.database.path):
            return 0.0  # a file with no page yet: Litestream waits for data, none to lose
        return max(now - since, 0.0)

    def healthy(self, now: float, max_lag_seconds: float) -> bool | None:
        """False on a poll error or a delay past ``max_lag``; None (unknown) before
        the first poll."""
        if self.error is not None:
            return False
        delay = self.delay(now)
        return None if delay is None else delay <= max_lag_seconds

    def status(self, now: float, max_lag_seconds: float,
               last_errors: tuple[str, ...] = ()) -> DatabaseStatus:
        """As of ``now`` (unix time): this database's part of the status snapshot."""
        delay = self.delay(now)
        return DatabaseStatus(
            path=str(self.database.path), replica=self.replica,
            litestream_status=self.litestream_status, txid=self.txid,
            replicated_txid=self.replicated_txid, lag=self.lag(),
            behind_s=None if delay is None else round(delay, 3),
            last_sync_at=self.last_sync_at,
            healthy=False if self.error is not None else (
                None if delay is None else delay <= max_lag_seconds),
            error=self.error, last_errors=last_errors)


def _unix_time(stamp: str) -> float | None:
    """Litestream's RFC 3339 with nanoseconds ("...T13:34:51.451218973Z"). An idle
    Litestream syncs every database every few seconds, so a poll of a thousand reads a
    thousand new times, nearly all within the same few seconds: the whole second is
    parsed once (microseconds each, milliseconds a poll otherwise), the digits added."""
    whole_second, fraction = stamp[:19], stamp[20:-1]
    if len(stamp) >= 20 and stamp[-1] == "Z" and (len(stamp) == 20 or (
            stamp[19] == "." and fraction.isdigit() and fraction.isascii())):
        whole = _WHOLE_SECONDS.get(whole_second)
        if whole is None:
            whole = _parse(whole_second + "Z")
            if whole is None:
                return None
            if len(_WHOLE_SECONDS) >= 64:
                _WHOLE_SECONDS.clear()
            _WHOLE_SECONDS[whole_second] = whole
        return whole + float("0." + fraction) if fraction else whole
    return _parse(stamp)


def _parse(stamp: str) -> float | None:
    try:
        return unix_time(stamp)
    except ValueError:
        return None


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def overall_health(databases: Iterable[bool | None]) -> bool | None:
    """All healthy → True; any unhealthy → False; otherwise unknown (None)."""
    found = set(databases)
    if False in found:
        return False
    if None in found:
        return None
    return True
