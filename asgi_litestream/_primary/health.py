"""Replication health: how far behind each replica is, polled in the background.

A request never waits on Litestream: the poller asks the control socket every
``health_interval`` (one call, however many databases) and the status snapshot
reads what it found.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.lowlevel

from .._config.databases import Database
from .._config.sqlite import in_wal_mode
from .._litestream.control import ControlClient, ControlError
from .database_health import DatabaseHealth, DatabaseStatus, overall_health

logger = logging.getLogger("asgi_litestream")

_HISTORY_EVERY = 10.0  # seconds between two samples of the delay
_HISTORY_SAMPLES = 360  # an hour of them
_JOURNAL_CHECKS_PER_POLL = 4
_POSITIONS_PER_POLL = 4
_STATUSES_PER_STEP = 250  # databases whose status is made between two checkpoints


class HealthPoller:
    """Refreshes every database's health with one ``GET /list``: the cost of a poll
    does not grow with the number of databases (a folder may hold thousands).

    Each poll also makes the databases' part of the status snapshot, as of the moment
    ``/list`` answered (:attr:`as_of`): a probe of the status route never pays for a
    thousand databases, and every figure of a snapshot describes one moment.
    """

    def __init__(self, databases: tuple[Database, ...], *, name: str, max_lag: float) -> None:
        self.name = name
        self.max_lag = max_lag
        self.folders = [db for db in databases if db.is_folder]
        self._health = {db.path: DatabaseHealth(database=db)
                        for db in databases if not db.is_folder}
        self.changes = 0  # bumped as each poll ends, for the status route's cache
        self._journal_turn = self._position_turn = 0
        self._listed: set[Any] = set()  # the paths of the last /list, as strings
        self.as_of: float | None = None  # unix time of the last poll's figures
        # The databases' part of the snapshot as of as_of, without Litestream's lines:
        # made as the poll ends while someone reads the status (``_watched``), else at
        # the first read after it. With the names to find those lines by.
        self._polled: tuple[int, tuple[DatabaseStatus, ...], list[str]] = (-1, (), [])
        self._overall: bool | None = None
        self._watched = False
        self._rendered: tuple[tuple[int, int], tuple[DatabaseStatus, ...]] | None = None
        # Per listed database, the delay over the last hour (the status page's chart);
        # not for a folder's databases, which may be thousands. Each sample is the
        # worst delay seen over its _HISTORY_EVERY, not the delay at one poll: polls
        # and Litestream's syncs both tick every few seconds, so a poll lands at the
        # same phase of the sync each time and would show an artefact of that phase.
        self._history = {str(path): deque[tuple[float, float | None]](
            maxlen=_HISTORY_SAMPLES) for path in self._health}
        self._worst: dict[str, float | None] = dict.fromkeys(self._history)

    @property
    def databases(self) -> list[DatabaseHealth]:
        """The listed databases, then the folders' databases Litestream replicates."""
        return list(self._health.values())

    def paths(self) -> list[Path]:
        return list(self._health)

    def note_position(self, path: Path, txid: int, replicated_txid: int) -> None:
        """Positions of a POST /sync made for another reason (durable write, flush)."""
        health = self._health.get(path)
        if health is not None:
            health.txid, health.replicated_txid = txid, replicated_txid

    async def poll(self, control: ControlClient) -> bool:
        """One round; False when the control socket did not answer at all."""
        try:
            listed = {d.get("path"): d for d in await control.databases()}
        except ControlError as exc:
            for health in self._health.values():
                health.error = str(exc)
            await self._polled_at(time.time())
            return False
        now = time.time()
        self._discover(listed)
        self._note_worst(now)  # the delays just before this poll's syncs count too
        for path, health in self._health.items():
            entry = listed.get(str(path))
            if entry is not None:
                health.observe(entry, now)
            elif path.exists():  # configured, on disk, yet not replicated
                health.error = "Litestream does not list this database"
            else:
                health.observe({}, now)  # nothing committed yet: nothing to ship
                health.synced_at = now
        await self._refresh_positions(control)
        self._check_journals()
        self._sample(now)
        await self._polled_at(now)
        return True

    async def _polled_at(self, now: float) -> None:
        """The poll's figures are in, as of ``now``: the snapshot may show them. Made
        here, a few hundred databases at a time, while someone reads the status: a
        request then neither makes a thousand nor waits for the loop held that long
        (meanwhile it reads the last poll's)."""
        if self._watched:
            self._watched = False
            healths = list(self._health.values())
            made: list[DatabaseStatus] = []
            for start in range(0, len(healths), _STATUSES_PER_STEP):
                if start:
                    await anyio.lowlevel.checkpoint()
                made += [h.status(now, self.max_lag)
                         for h in healths[start:start + _STATUSES_PER_STEP]]
            self._keep(self.changes + 1, tuple(made), healths)
        self.as_of, self.changes = now, self.changes + 1  # else made at the first read

    def _statuses(self) -> tuple[DatabaseStatus, ...]:
        """The databases' part of the snapshot, without Litestream's lines."""
        if self._polled[0] != self.changes:
            healths = list(self._health.values())
            now = time.time() if self.as_of is None else self.as_of
            self._keep(self.changes, tuple(h.status(now, self.max_lag) for h in healths),
                       healths)
        return self._polled[1]

    def _keep(self, changes: int, statuses: tuple[DatabaseStatus, ...],
              healths: list[DatabaseHealth]) -> None:
        self._polled = (changes, statuses, [h.name for h in healths])
        self._overall = overall_health(d.healthy for d in statuses)

    async def _refresh_positions(self, control: ControlClient) -> None:
        """Positions (txid, replicated txid) are informative, and Litestream answers
        them one database per call: a few per poll, round robin, so the cost stays
        flat however many databases there are (a handful: all of them every poll)."""
        healths = [h for h in self._health.values() if h.litestream_status is not None]
        if not healths:
            return
        for _ in range(min(_POSITIONS_PER_POLL, len(healths))):
            self._position_turn = (self._position_turn + 1) % len(healths)
            health = healths[self._position_turn]
            try:
                # Without wait this returns at once with both positions; a hung
                # replica shows up as a timeout here rather than as silence.
                result = await control.sync(health.database.path, wait=False, timeout=5)
            except ControlError as exc:
                health.error = str(exc)
                continue
            health.txid, health.replicated_txid = result.txid, result.replicated_txid

    def _discover(self, listed: dict[Any, dict[str, Any]]) -> None:
        """A folder's databases come and go: follow what Litestream replicates."""
        if not self.folders:
            return
        if listed.keys() == self._listed:
            return  # the usual poll: the same databases as last time
        self._listed = set(listed.keys())
        for text in listed:
            path = Path(str(text))
            if path not in self._health:
                folder = next((f for f in self.folders if f.holds(path)), None)
                if folder is not None:
                    self._health[path] = DatabaseHealth(database=folder.member(path))
        for path in [p for p, h in self._health.items()
                     if str(p) not in listed and not h.database.is_folder
                     and any(f.holds(p) for f in self.folders)]:
            del self._health[path]  # removed from the folder

    def _check_journals(self) -> None:
        """A few databases per poll (each check opens the file), round robin."""
        healths = list(self._health.values())
        if not healths:
            return
        for _ in range(min(_JOURNAL_CHECKS_PER_POLL, len(healths))):
            self._journal_turn = (self._journal_turn + 1) % len(healths)
            self._check_journal(healths[self._journal_turn])

    def _check_journal(self, health: DatabaseHealth) -> None:
        if health.synced_at is None:
            return  # Litestream sets WAL mode as it starts on a file: not yet
        wal = in_wal_mode(health.database.path)
        if wal is False and not health.journal_warned:
            logger.warning(
                "litestream %r: %s is not in WAL mode, so Litestream cannot replicate its "
                "changes. Fix: remove any PRAGMA journal_mode other than WAL from the app's "
                "connections (Litestream sets WAL itself)", self.name, health.database.path)
        if wal is not None:
            health.journal_warned = not wal

    def _note_worst(self, wall: float) -> None:
        """Keep the worst delay of the current history sample."""
        for path, worst in self._worst.items():
            health = self._health.get(Path(path))
            delay = None if health is None else health.delay(wall)
            if delay is not None and (worst is None or delay > worst):
                self._worst[path] = delay

    def _sample(self, wall: float) -> None:
        """Every _HISTORY_EVERY: the worst delay since the last sample. Read before the
        poll's news (the old ``last_sync_at``) as well as after, so a sync that came
        just before the poll cannot hide how long the replica waited for it."""
        self._note_worst(wall)
        for path, samples in self._history.items():
            if Path(path) in self._health and (
                    not samples or wall - samples[-1][0] >= _HISTORY_EVERY):
                samples.append((wall, self._worst[path]))
                self._worst[path] = None

    def history(self) -> dict[str, list[tuple[float, float | None]]]:
        """Per listed database: (unix time, replication delay) over the last hour."""
        return {path: list(samples) for path, samples in self._history.items()}

    def log_changes(self, now: float) -> None:
        """One warning when a database's replication stalls, one line when it
        recovers: under a bare server an operator sees an outage and its end.
        ``now`` is a unix time."""
        for health in self._health.values():
            healthy = health.healthy(now, self.max_lag)
            where = (self.name, health.database.path, health.replica)
            if healthy is False and health.unhealthy_since is None:
                health.unhealthy_since = now
                why = (f"polling it failed: {health.error}" if health.error is not None
                       else f"the replica has not confirmed a sync for "
                            f"{health.delay(now) or 0:.1f}s")
                logger.warning("litestream %r: replication of %s to %s is stalled: %s "
                               "(max_lag %ss)", *where, why, self.max_lag)
            elif healthy and health.unhealthy_since is not None:
                logger.info("litestream %r: replication of %s to %s recovered after %.1fs "
                            "(delay now %.1fs)", *where, now - health.unhealthy_since,
                            health.delay(now) or 0.0)
                health.unhealthy_since = None

    def snapshot(self, errors_of: Callable[[str], list[str]],
                 log_changes: int = 0) -> tuple[DatabaseStatus, ...]:
        """Per database, as of the last poll (:attr:`as_of`), with the last lines
        Litestream logged about it: the same tuple until the next poll or the next
        logged error (the status route reuses its JSON meanwhile). The delay it shows
        may so be up to one ``health_interval`` old."""
        self._watched = True
        key = (self.changes, log_changes)
        if self._rendered is None or self._rendered[0] != key:
            statuses = self._statuses()
            self._rendered = (key, tuple(
                replace(status, last_errors=tuple(errors)) if errors else status
                for status, errors in zip(
                    statuses, map(errors_of, self._polled[2]), strict=True)))
        return self._rendered[1]

    def overall(self) -> bool | None:
        """:func:`overall_health` of the databases as of the last poll."""
        self._statuses()
        return self._overall


