"""Credentials that rotate without a restart of the app.

:class:`Credentials` knows where this service's S3 keys came from and when they were
loaded (the status shows both, never the keys), and puts new ones in place:
``rotate()`` writes them into the environment the service holds (the one Litestream
is spawned with and the lease's boto3 client reads), then flushes Litestream, stops it
and starts it again with them, holding the keeper's lock the whole time. The state is
``restarting`` meanwhile, so durable waits wait for the new Litestream
(Replicating.sync_once) rather than fail; a rotation is not counted as a restart.

``watch_files()`` (a service task, with access_key_id_file) reads the two key files
every health_interval and rotates to their keys once both are readable, non-empty and
new. Kubernetes swaps a Secret's files at once (a symbolic link), but other writers
may not: a change to only one of the two waits one more check, in case the other is
on its way; an empty or unreadable file is logged and not applied.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timezone
from typing import Any

import anyio

from .._config.secret_files import watch_key_files
from .._config.settings import Settings
from .._exceptions import ConfigError, StartupError
from .._litestream.logs import LitestreamLog
from .._state import State
from .keeper import Keeper

logger = logging.getLogger("asgi_litestream")

KEY_VARIABLES = ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY")


class Credentials:
    """The S3 keys of one service: their source, when loaded, and their rotation."""

    def __init__(self, settings: Settings, *, env: dict[str, str], keeper: Keeper,
                 log: LitestreamLog) -> None:
        self.settings = settings
        self.source = settings.credentials_source
        self.loaded_at = datetime.now(timezone.utc)
        self.rotations = 0
        self.last_pause_s: float | None = None  # flush to running again, last rotation
        self._env = env
        self._keeper = keeper
        self._log = log
        self._lock = anyio.Lock()
        self._applied = (settings.access_key_id, settings.secret_access_key)

    def to_json(self) -> dict[str, Any]:
        """The status's ``credentials``: where from and when, never the keys."""
        return {"source": self.source,
                "loaded_at": self.loaded_at.isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")}

    async def rotate(self, access_key_id: str, secret_access_key: str, *,
                     source: str = "call") -> None:
        """Use these keys from now on: in the environment, then in a Litestream
        restarted with them (when it runs here). Raises ConfigError for an empty key,
        StartupError when Litestream does not start again (state ``failed``)."""
        for option, value in (("access_key_id", access_key_id),
                              ("secret_access_key", secret_access_key)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(option, "***" if option.startswith("secret") else value,
                                  "must be a non-empty string", "pass the new key")
        async with self._lock:
            self._log.add_secrets([access_key_id, secret_access_key])
            self._env.update(zip(KEY_VARIABLES, (access_key_id, secret_access_key),
                                 strict=True))
            self._applied = (access_key_id, secret_access_key)
            self.source, self.loaded_at = source, datetime.now(timezone.utc)
            self.rotations += 1
            took = await self._restart()
            if took is None:
                logger.info("litestream %r: credentials rotated (source %s); Litestream "
                            "does not run in this worker: it starts with them",
                            self.settings.name, source)
            else:
                logger.info("litestream %r: credentials rotated (source %s); Litestream "
                            "restarted in %d ms", self.settings.name, source, took * 1000)

    async def _restart(self) -> float | None:
        """Flush, stop and start Litestream again (with the keeper's environment, which
        now holds the new keys); the seconds that took, or None when it was not
        running here (a standby, or down: it starts with them)."""
        keeper, settings = self._keeper, self.settings
        async with keeper.lock:
            child = keeper.child
            if child is None or keeper.closing:
                return None
            began = time.monotonic()
            # Durable waits see "restarting" and wait for the new one.
            keeper.set_state(State.RESTARTING)
            with anyio.CancelScope(shield=True):  # never leave it half-restarted
                if not await child.flush(settings.databases, settings.flush_timeout):
                    logger.warning("litestream %r: the flush before the rotation did not "
                                   "reach every replica (the old keys may be revoked "
                                   "already); the new Litestream ships the rest",
                                   settings.name)
                keeper.child = None  # keep_alive: this exit is no crash
                await child.aclose(grace=settings.stop_timeout)
                try:
                    await keeper.spawn()
                except StartupError:
                    keeper.set_state(State.FAILED)
                    logger.error("litestream %r: did not start again with the rotated "
                                 "credentials; replication is OFF until "
                                 "start_litestream(%r)", settings.name, settings.name)
                    raise
                finally:
                    keeper.wake()  # keep_alive watches the new child
            self.last_pause_s = time.monotonic() - began
            return self.last_pause_s

    async def watch_files(self) -> None:
        """The service's task (with key files): rotate to the files' keys when both
        are readable, non-empty and new; a change to one only waits one more check."""
        settings = self.settings
        await watch_key_files(
            (settings.access_key_id_file, settings.secret_access_key_file),
            name=settings.name, interval=settings.health_interval,
            applied=lambda: self._applied,
            rotate=functools.partial(self.rotate, source="file"),
            stopped=lambda: self._keeper.closing)
