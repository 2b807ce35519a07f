"""Several read replicas at once: one :class:`~.follower.Follower` per database, run
as one anyio service."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._config.databases import Database
from .._config.settings import Settings
from .._litestream.logs import LitestreamLog
from .._litestream.restart import RestartPolicy
from .follower import Follower


class FollowerSet:
    """One :class:`Follower` per database, run as an anyio service:
    ``await task_group.start(followers.serve)``, then ``await followers.close()``."""

    def __init__(
        self, binary: Path, databases: Sequence[Database], *, env: Mapping[str, str],
        log: LitestreamLog, name: str = "follower", config_path: Path | None = None,
        policy: Callable[[], RestartPolicy] | None = None, interval: float = 1.0,
        health_interval: float = 2.0, max_lag: float = 10.0, probe_timeout: float = 10.0,
        grace: float = 1.0, secrets: Sequence[str] = (),
        on_fresh_copy: Callable[[Path], Awaitable[None]] | None = None,
        on_update: Callable[[Path], Awaitable[None]] | None = None,
    ) -> None:
        self.max_lag = max_lag
        self.log = log
        self.followers = tuple(
            Follower(binary, db, env=env, log=log, name=name, config_path=config_path,
                     policy=policy() if policy else None, interval=interval,
                     health_interval=health_interval, max_lag=max_lag,
                     probe_timeout=probe_timeout, grace=grace, secrets=secrets,
                     on_fresh_copy=on_fresh_copy, on_update=on_update)
            for db in databases)
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._beside: list[Callable[[], Coroutine[Any, Any, None]]] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, binary: Path, *, config_path: Path,
        env: Mapping[str, str],
        on_fresh_copy: Callable[[Path], Awaitable[None]] | None = None,
        on_update: Callable[[Path], Awaitable[None]] | None = None,
    ) -> FollowerSet:
        """A follower per database of ``settings``, with its options: restarts as the
        primary's, ``sync_interval`` as the follow interval, ``startup_timeout`` as
        the probe's, ``stop_timeout`` as the grace before SIGKILL."""
        return cls(
            binary, settings.databases, env=env, log=LitestreamLog(settings.secrets()),
            name=settings.name, config_path=config_path,
            policy=lambda: RestartPolicy(max_restarts=settings.max_restarts,
                                         restart_window=settings.restart_window,
                                         max_backoff=settings.max_backoff),
            interval=settings.sync_interval, health_interval=settings.health_interval,
            max_lag=settings.max_lag, probe_timeout=settings.startup_timeout,
            grace=settings.stop_timeout, secrets=settings.secrets(),
            on_fresh_copy=on_fresh_copy, on_update=on_update)

    @property
    def ready(self) -> bool:
        """Every copy is in place."""
        return all(f.ready for f in self.followers)

    def healthy(self, max_lag: float | None = None) -> bool:
        """Every copy is in place and trails its replica by at most ``max_lag`` s."""
        return all(f.status(max_lag).healthy for f in self.followers)

    def snapshot(self, max_lag: float | None = None) -> list[dict[str, Any]]:
        return [f.status(max_lag).to_json() for f in self.followers]

    def follower(self, path: str | os.PathLike[str]) -> Follower:
        wanted = Path(path).expanduser().absolute()
        for follower in self.followers:
            if follower.path == wanted:
                return follower
        raise KeyError(f"{str(wanted)!r} is not followed here; the copies are "
                       f"{', '.join(str(f.path) for f in self.followers)}")

    def run_beside(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task`` while the followers serve, stopped with them (the key files'
        watcher). Before :meth:`serve` only."""
        self._beside.append(task)

    async def use_env(self, variables: Mapping[str, str | None], *,
                      secrets: Sequence[str] = ()) -> int:
        """Every follower with these environment variables (new S3 keys) from now on,
        ``secrets`` scrubbed from their lines: each running `restore -f` is started
        again with them, all at once. How many were."""
        self.log.add_secrets(secrets)
        restarted: list[bool] = []

        async def one(follower: Follower) -> None:
            restarted.append(await follower.use_env(variables, secrets=secrets))

        async with anyio.create_task_group() as task_group:
            for follower in self.followers:
                task_group.start_soon(one, follower)
        return sum(restarted)

    async def wait_for(self, path: str | os.PathLike[str], txid: int, timeout: float) -> bool:
        """True once the copy at ``path`` holds ``txid``; False after ``timeout`` s."""
        return await self.follower(path).wait_for(txid, timeout)

    async def wait_ready(self, timeout: float) -> bool:
        """True once every copy is in place; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for follower in self.followers:
            await follower.wait_ready(max(deadline - time.monotonic(), 0))
        return self.ready

    async def serve(self, *, task_status: anyio.abc.TaskStatus[FollowerSet] =
                    anyio.TASK_STATUS_IGNORED) -> None:
        """Follow every database until :meth:`close` (or cancellation)."""
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as task_group:
                self._scope = task_group.cancel_scope
                for follower in self.followers:
                    task_group.start_soon(follower.run)
                for task in self._beside:
                    task_group.start_soon(task)
                task_status.started(self)
        finally:
            self._scope = None
            self._stopped.set()

    async def close(self) -> None:
        """Stop every follower and reap its Litestream. Bounded: never hangs."""
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            # Each follower's stop is shielded and bounded; waiting here need not be.
            await self._stopped.wait()
