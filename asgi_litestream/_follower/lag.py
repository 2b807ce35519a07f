"""How far a follower's copy trails its replica: the replica's head (read as every
position is, by _litestream/positions.py), the lag measured from it, and
:class:`FollowerStatus`, which shows both on the status route."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config.databases import Database
from .._litestream.positions import replica_head

_MAX_FIRST_SEEN = 1024


class Lag:
    """How far a copy trails its replica: transactions, and seconds since a probe first
    saw the oldest replica transaction the copy does not hold yet. Probes are at most
    one ``health_interval`` apart, so it is exact to that interval."""

    def __init__(self) -> None:
        self.replica_txid: int | None = None
        self.known = False  # False before the first probe and after a failed one
        self._first_seen: list[tuple[int, float]] = []  # (head txid, monotonic), rising

    def observe(self, head: int | None, copy_txid: int | None, now: float) -> None:
        """Record one successful probe: the replica's head was ``head`` at ``now``."""
        self.known = True
        if head is None or (self.replica_txid is not None and head < self.replica_txid):
            self._first_seen.clear()  # empty, or a replica started over
        self.replica_txid = head
        if head is not None and (not self._first_seen or head > self._first_seen[-1][0]):
            self._first_seen.append((head, now))
        if copy_txid is not None:
            self._first_seen = [e for e in self._first_seen[:-1] if e[0] > copy_txid] + \
                self._first_seen[-1:]
        if len(self._first_seen) > _MAX_FIRST_SEEN:
            # Merge the two oldest, keeping the older time: overstates, never hides, lag.
            (_, seen), (head1, _) = self._first_seen[:2]
            self._first_seen[:2] = [(head1, seen)]

    def failed(self) -> None:
        """A probe failed: the lag is unknown until the next one succeeds."""
        self.known = False

    def measure(self, copy_txid: int | None, now: float) -> tuple[int | None, float | None]:
        """(transactions behind, seconds behind); (None, None) when unknown."""
        if not self.known or self.replica_txid is None or copy_txid is None:
            return None, None
        behind = max(self.replica_txid - copy_txid, 0)
        for head, seen in self._first_seen:
            if head > copy_txid:
                return behind, max(now - seen, 0.0)
        return behind, 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowerStatus:
    """One follower, as the status route shows it."""

    path: str
    replica: str  # credentials redacted
    ready: bool  # a copy restored (or resumed) by this follower is in place
    copy_txid: int | None
    replica_txid: int | None
    behind_txns: int | None
    behind_s: float | None
    healthy: bool  # ready, and behind_s <= max_lag
    restarts: int
    last_exit_code: int | None
    error: str | None
    pid: int | None
    generation: int  # fresh copies renamed into place: reopen connections when it moves

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def probe_head(binary: Path, database: Database, env: Mapping[str, str], *,
                     config_path: Path | None = None, timeout: float = 10.0,
                     secrets: Sequence[str] = ()) -> int | None:
    """The latest txid on the replica (None: it holds nothing). Raises PositionError,
    TimeoutError."""
    head = await replica_head(database, env, binary=binary, config_path=config_path,
                              secrets=secrets, timeout=timeout)
    return head.txid if head.name is not None else None
