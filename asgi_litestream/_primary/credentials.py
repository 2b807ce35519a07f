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

Keys the storage refuses while Litestream runs (``refusal``, _litestream/refusals.py)
make the status say ``credentials: rejected`` and health unhealthy; a rotation clears
it, and a rotation away from refused keys skips the flush they cannot make.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

import anyio

from .._config.secret_files import check_keys, use_variables, watch_key_files
from .._config.settings import Settings
from .._exceptions import StartupError
from .._litestream.logs import LitestreamLog
from .._litestream.process import LitestreamProcess
from .._litestream.refusals import KeyRefusal
from .._locks.leader_info import CredentialsStatus
from .._state import State
from .keeper import Keeper

logger = logging.getLogger("asgi_litestream")


class Credentials:
    """The S3 keys of one service: their source, when loaded, and their rotation."""

    def __init__(self, settings: Settings, *, env: dict[str, str], keeper: Keeper,
                 log: LitestreamLog, replicated: Callable[[], int] = lambda: 0,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.source = settings.credentials_source
        self.loaded_at = datetime.now(timezone.utc)
        self.rotations = 0
        self.last_pause_s: float | None = None  # flush to running again, last rotation
        self._env = env
        self._keeper = keeper
        self._log = log
        self._lock = anyio.Lock()
        self._left_down = False  # the last rotation's start failed: Litestream is down
        # Only the running child's lines count, not those of one stopping for a rotation.
        self.refusal = KeyRefusal(log, name=settings.name, source=lambda: self.source,
                                  counts=self._running_child, progress=replicated,
                                  on_change=on_change)  # the leader tells the standbys

    @property
    def changes(self) -> int:
        """Bumped when status() would change (besides rotations)."""
        return self.refusal.changes

    def _running_child(self, pid: int) -> bool:
        child = self._keeper.child
        return child is not None and child.pid == pid

    def status(self) -> CredentialsStatus:
        """The status's ``credentials``: where from, when, refused or not; no key."""
        return CredentialsStatus.of(source=self.source, loaded_at=self.loaded_at,
                                    refusal=self.refusal, rotations=self.rotations,
                                    last_pause_s=self.last_pause_s)

    async def rotate(self, access_key_id: str, secret_access_key: str, *,
                     session_token: str | None = None, source: str = "call") -> None:
        """Use these keys from now on: in the environment, then in a Litestream
        restarted with them (when it runs here). Raises ConfigError for an empty key,
        StartupError when Litestream does not start again (state ``failed``). Nothing
        changes until the keeper's lock is held: cancelled while waiting for it (a
        stop or a start holds it for seconds), the old keys stay in use everywhere."""
        variables = check_keys(access_key_id, secret_access_key, session_token)
        self.settings.check_rotatable("access_key_id", access_key_id)
        async with self._lock, self._keeper.lock:
            with anyio.CancelScope(shield=True):  # never leave it half-rotated
                self._log.add_secrets([v for v in variables.values() if v])
                use_variables(self._env, variables)
                self.source, self.loaded_at = source, datetime.now(timezone.utc)
                try:
                    took = await self._restart()
                finally:
                    self.rotations += 1  # counted once done: last_pause_s is set by then
        if took is None:
            logger.info("litestream %r: credentials rotated (source %s); Litestream "
                        "does not run in this worker: it starts with them",
                        self.settings.name, source)
        else:
            logger.info("litestream %r: credentials rotated (source %s); Litestream "
                        "restarted in %d ms", self.settings.name, source, took * 1000)

    async def _restart(self) -> float | None:
        """Flush, stop and start Litestream again (with the keeper's environment, which
        now holds the new keys), the keeper's lock held; the seconds that took, or None
        when it was not running here (a standby, or down: it starts with them)."""
        keeper, settings = self._keeper, self.settings
        child = keeper.child
        # Down because the last rotation's start failed: these keys get their start.
        retry = (self._left_down and child is None and keeper.want_running
                 and keeper.state is State.FAILED)
        if keeper.closing or (child is None and not retry):
            self.refusal.clear()  # judged afresh by the Litestream that starts with them
            return None
        began = time.monotonic()
        # Durable waits see "restarting" and wait for the new one.
        keeper.set_state(State.RESTARTING)
        if child is not None:
            # Keys refused now (not when the call came): nothing can be flushed with them.
            refused = self.refusal.failure is not None
            await self._flush_old(child, refused=refused)
            keeper.child = None  # keep_alive: this exit is no crash
            await child.aclose(grace=0 if refused else settings.stop_timeout)
        self.refusal.clear()  # the old one's lines no longer count
        try:
            await keeper.spawn()
        except StartupError:
            self._left_down = True
            keeper.set_state(State.FAILED)
            logger.error("litestream %r: did not start again with the rotated "
                         "credentials; replication is OFF until new keys (the "
                         "next rotation starts it) or start_litestream(%r)",
                         settings.name, settings.name)
            raise
        else:
            self._left_down = False
        finally:
            keeper.wake()  # keep_alive watches the new child
        self.last_pause_s = time.monotonic() - began
        return self.last_pause_s

    async def _flush_old(self, child: LitestreamProcess, *, refused: bool) -> None:
        """Flush the Litestream running with the old keys; refused keys can flush
        nothing, so it is not tried (nor its final sync: it is killed)."""
        settings = self.settings
        if refused:
            logger.info("litestream %r: the old keys were refused: no flush with them; "
                        "the new Litestream ships what is committed", settings.name)
        elif not await child.flush(settings.databases, settings.flush_timeout):
            logger.warning("litestream %r: the flush before the rotation did not reach "
                           "every replica (the old keys may be revoked already); the new "
                           "Litestream ships the rest", settings.name)

    async def watch_files(self) -> None:
        """The service's task (with key files): rotate to the files' keys when both
        are readable, non-empty and new; a change to one only waits one more check."""
        settings = self.settings
        await watch_key_files(
            (settings.access_key_id_file, settings.secret_access_key_file),
            name=settings.name, interval=settings.health_interval,
            read_at_startup=(settings.access_key_id, settings.secret_access_key),
            rotate=functools.partial(self.rotate, source="file"),
            stopped=lambda: self._keeper.closing)
