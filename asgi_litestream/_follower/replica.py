"""``role="follower"``: the app's side of a read replica (the mechanism is _follower/follower.py).

A follower never runs ``litestream replicate`` and never writes to the replica: it
keeps a read-only copy of each database following the primary's replica. This module
is what the middleware, the status route, the metrics and the app see of it, and the
read-your-writes handshake: the primary hands the client its position
(:func:`position_header` on ``durable()``'s result), the follower waits for it.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._config.position_header import replica_key
from .._config.settings import Settings
from .._config.sqlite import dispose_pools
from .._exceptions import LitestreamError, SyncError
from .._litestream.scrape import MetricsWriter
from .credentials import FollowerCredentials
from .group import FollowerSet

logger = logging.getLogger("asgi_litestream")

# The primary's replica positions, as the client carries them from a write to a read.


class ReadReplica:
    """The followers of one LitestreamLifespan (``role="follower"``), as the app sees
    them: ``request.state.litestream`` on a follower."""

    __slots__ = ("_followers", "_on_fresh_copy", "_started", "credentials", "settings")

    def __init__(self, settings: Settings, followers: FollowerSet) -> None:
        self.settings = settings
        self.credentials = FollowerCredentials(settings, followers)
        self._followers = followers
        self._started = time.monotonic()
        self._on_fresh_copy: list[Callable[[Path], Any]] = []
        if settings.access_key_id_file is not None:
            followers.run_beside(self.credentials.watch_files)

    def on_fresh_copy(self, callback: Callable[[Path], Any]) -> None:
        """Call ``callback(path)`` (sync or async) each time a fresh copy of ``path``
        replaces the old file: connections opened before it still read the old,
        deleted file until they are closed. Engines given as ``database=`` have
        their pools disposed without this."""
        self._on_fresh_copy.append(callback)

    async def fresh_copy(self, path: Path, engines: list[Any]) -> None:
        """A fresh copy of ``path`` is in place: drop the pools, tell the app."""
        logger.warning("litestream %r: a fresh copy of %s replaced the old file; "
                       "connections opened before it read the old one until closed%s",
                       self.name, path, " (disposing the engines' pools)" if engines else "")
        try:
            await dispose_pools(engines)
            for callback in self._on_fresh_copy:
                result = callback(path)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            logger.exception("litestream %r: telling the app about the fresh copy of %s "
                             "failed", self.name, path)

    def __repr__(self) -> str:
        return f"ReadReplica(name={self.name!r}, ready={self.ready!r})"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def ready(self) -> bool:
        """Every copy is in place (the first restore of each is complete)."""
        return self._followers.ready

    @property
    def running(self) -> bool:
        """Every copy follows: in place, within ``max_lag`` of its replica."""
        return self._followers.healthy(self.settings.max_lag)

    def follows(self, key: str) -> Path | None:
        """The copy of the database whose replica has this key (replica_key), if any."""
        for follower in self._followers.followers:
            if replica_key(follower.database.replica_url) == key:
                return follower.path
        return None

    async def wait_for(self, database: str | os.PathLike[str], txid: int,
                       timeout: float) -> bool:
        """True once the copy of ``database`` (a path, or its file name) holds the
        primary's position ``txid``; False after ``timeout`` seconds."""
        return await self._followers.wait_for(self._path(database), txid, timeout)

    async def sync(self, *, timeout: float | None = None,
                   database: str | os.PathLike[str] | None = None) -> dict[str, int]:
        raise SyncError("this app is a follower (role='follower'): it never writes, so "
                        "nothing can be made durable here. Fix: send writes to the primary")

    async def start(self) -> None:
        raise LitestreamError("a follower runs no Litestream to start (role='follower')")

    async def stop(self) -> bool:
        raise LitestreamError("a follower runs no Litestream to stop (role='follower')")

    async def rotate_credentials(self, *, access_key_id: str, secret_access_key: str,
                                 session_token: str | None = None) -> None:
        """Use new S3 keys from now on, without restarting the app: each follower's
        `restore -f` is started again with them (its copy stays in place and is read
        meanwhile; not counted in ``restarts``). Applies to this process; key files are
        watched by every follower."""
        await self.credentials.rotate(access_key_id, secret_access_key,
                                      session_token=session_token)

    def status(self) -> dict[str, Any]:
        """The status snapshot: what the status route serves on a follower."""
        databases = self._followers.snapshot(self.settings.max_lag)
        ready, healthy = self.ready, self.running
        return {
            "name": self.name,
            "role": "follower",
            "status": "running" if healthy else "down",
            "state": ("following" if healthy else "catching_up" if ready
                      else "restoring"),
            "ready": ready,
            "healthy": healthy,
            "worker_pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "restarts": sum(d["restarts"] for d in databases),
            "credentials": self.credentials.to_json(),
            "databases": databases,
        }

    def metrics(self) -> str:
        """Prometheus text: readiness, lag in transactions and seconds, restarts."""
        name = {"name": self.name}
        out = MetricsWriter()
        out.family("asgi_litestream_follower_ready", "gauge",
                   "1 once every copy is in place.", [(name, self.ready)])
        out.family("asgi_litestream_credentials_rejected", "gauge",
                   "1 while the replica refuses the S3 keys in use.",
                   [(name, self.credentials.refusal.failure is not None)])
        databases = [({**name, "database": d["path"]}, d)
                     for d in self._followers.snapshot(self.settings.max_lag)]
        for metric, kind, help_text, key in _FOLLOWER_SERIES:
            out.family(metric, kind, help_text, [(labels, d[key]) for labels, d in databases])
        return "\n".join(out.lines) + "\n"

    def _path(self, database: str | os.PathLike[str]) -> Path:
        text = os.fspath(database)
        for follower in self._followers.followers:
            if text in (follower.path.name, str(follower.path)):
                return follower.path
        return Path(text)


_FOLLOWER_SERIES = (
    ("asgi_litestream_follower_copy_txid", "gauge",
     "Transaction the follower's copy holds.", "copy_txid"),
    ("asgi_litestream_follower_behind_transactions", "gauge",
     "Transactions the copy lacks.", "behind_txns"),
    ("asgi_litestream_follower_behind_seconds", "gauge",
     "Age of the oldest transaction the copy lacks.", "behind_s"),
    ("asgi_litestream_follower_restarts_total", "counter",
     "Restarts of the follower's Litestream.", "restarts"),
)
