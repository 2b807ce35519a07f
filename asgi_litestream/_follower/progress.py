"""What the app sees of one follower: whether its copy is in place, the transaction it
holds, how far it trails its replica, its restarts; the waits on it and its status.
The :class:`~.follower.Follower` that does the following writes it."""

from __future__ import annotations

import time

import anyio
import anyio.abc

from .._config.databases import Database
from .._exceptions import StartupError
from .lag import FollowerStatus, Lag


class Progress:
    """One follower's progress, read by the app, written by the follower."""

    def __init__(self, database: Database, *, max_lag: float) -> None:
        self.database = database
        self.path = database.path
        self.max_lag = max_lag
        self.ready = False
        self.copy_txid: int | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.generation = 0
        self.error: str | None = None  # Litestream's last error line since progress
        self._gave_up: str | None = None
        self._probe_error: str | None = None
        self._lag = Lag()
        self._process: anyio.abc.Process | None = None
        self._changed: anyio.Event | None = None

    # -- what the app asks --

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def holds(self, txid: int) -> bool:
        """The copy holds transaction ``txid`` (and every one before it)."""
        return self.ready and self.copy_txid is not None and self.copy_txid >= txid

    async def wait_for(self, txid: int, timeout: float) -> bool:
        """True once the copy holds ``txid`` (the primary's position after a write:
        read-your-writes); False after ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while not self.holds(txid):
                await self._change().wait()
        return self.holds(txid)

    async def wait_ready(self, timeout: float) -> bool:
        """True once the first copy is in place; False after ``timeout`` seconds.
        Raises StartupError when following stopped for good before that."""
        with anyio.move_on_after(timeout):
            while not self.ready:
                if self._gave_up is not None:
                    raise StartupError(self._gave_up)
                await self._change().wait()
        return self.ready

    def status(self, max_lag: float | None = None) -> FollowerStatus:
        limit = self.max_lag if max_lag is None else max_lag
        behind_txns, behind_s = self._lag.measure(self.copy_txid, time.monotonic())
        if not self.ready:
            behind_txns = behind_s = None
        replica_txid = self._lag.replica_txid if self._lag.known else None
        if replica_txid is not None and self.copy_txid is not None:
            # The replica holds at least what the copy got from it since the last probe.
            replica_txid = max(replica_txid, self.copy_txid)
        return FollowerStatus(
            path=str(self.path), replica=self.database.replica, ready=self.ready,
            copy_txid=self.copy_txid, replica_txid=replica_txid, behind_txns=behind_txns,
            behind_s=None if behind_s is None else round(behind_s, 3),
            healthy=self.ready and behind_s is not None and behind_s <= limit,
            restarts=self.restarts, last_exit_code=self.last_exit_code,
            error=self._gave_up or self._probe_error or self.error, pid=self.pid,
            generation=self.generation)

    def _set_txid(self, txid: int | None) -> None:
        if txid is not None:
            self.copy_txid = txid
        self._notify()

    def _change(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
