"""Read replicas ("followers"): a local, read-only copy of each database that follows
the primary's replica with `litestream restore -f`. A follower never replicates and
never writes to the replica.

Restarts: resuming over an existing copy fails whenever the copy is newer than the
replica's latest snapshot (nearly always: "saved TXID ... is ahead of latest
snapshot"). The follower then restores a fresh copy under a temporary name while the
old one is still read, and renames it over the old one (Litestream keeps following the
renamed file). Connections opened before read the old file until closed: open one per
request, or reopen when the status' ``generation`` changes. One follower per copy.

New S3 keys (:meth:`Follower.use_env`) need a new `restore -f`: the running one is
stopped and started again at once, with them, as a restart is, but neither counted nor
backed off; the copy stays in place (and is read) until a fresh one replaces it.

Reading the copy (locks, WAL mode, page cache) is in ``_follower/copy.py``, how far it
trails its replica in ``_follower/lag.py``, what the app sees of a follower (ready,
position, waits, status) in ``_follower/progress.py``, one `restore -f` process in
``_follower/process.py``; several databases at once in ``_follower/group.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread

from .._config.databases import Database
from .._config.secret_files import use_variables
from .._exceptions import StartupError
from .._litestream.commands import restore_command
from .._litestream.logs import LitestreamLog
from .._litestream.positions import PositionError
from .._litestream.process import REAP_LIMIT
from .._litestream.restart import Exited, GiveUp, Restart, RestartPolicy, run_restarting
from .copy import (
    _in_wal_mode,
    _publish,
    _remove_restore_files,
    _replace_if_exists,
    _txid_path,
)
from .lag import probe_head
from .process import _Attempt, follow_once, lasting_failure
from .progress import Progress

logger = logging.getLogger("asgi_litestream")

_EMPTY_RETRY = 1.0  # seconds between two looks at a replica that holds no backup yet
_WAIT_LOG_EVERY = 10.0


class Follower(Progress):
    """Follows one database: keeps a read-only copy at ``database.path``, restarted
    (with backoff) when Litestream exits, re-restored when it cannot resume.

    ``env`` is Litestream's environment (``Settings.child_env``: no AWS_CA_BUNDLE).
    ``config_path``, a Litestream config listing ``database.path``, names the replica
    instead of its URL (a password stays out of argv); databases read from a user's
    litestream.yml need it. ``interval`` is Litestream's ``-follow-interval``.
    """

    def __init__(
        self, binary: Path, database: Database, *, env: Mapping[str, str],
        log: LitestreamLog, name: str = "follower", config_path: Path | None = None,
        policy: RestartPolicy | None = None, interval: float = 1.0,
        health_interval: float = 2.0, max_lag: float = 10.0, probe_timeout: float = 10.0,
        grace: float = 1.0, secrets: Sequence[str] = (),
        on_fresh_copy: Callable[[Path], Awaitable[None]] | None = None,
        on_update: Callable[[Path], Awaitable[None]] | None = None,
    ) -> None:
        for option, value in (("interval", interval), ("health_interval", health_interval),
                              ("max_lag", max_lag), ("probe_timeout", probe_timeout)):
            if not value > 0:
                raise ValueError(f"{option}={value!r} must be a number of seconds above 0")
        if config_path is None and urlsplit(database.replica_url).password:
            raise ValueError("a replica URL with a password would show in the process "
                             "list: name the replica through config_path")
        super().__init__(database, max_lag=max_lag)
        self.binary = binary
        self.name = name
        self.interval = interval
        self.health_interval = health_interval
        self.probe_timeout = probe_timeout
        self.grace = grace
        self._env = dict(env)
        self._log = log
        self._secrets = tuple(secrets)
        self._config_path = config_path
        self._policy = policy or RestartPolicy(max_restarts=5, restart_window=60.0,
                                               max_backoff=30.0)
        # Beside the copy, hidden; Litestream adds ".tmp" and "-txid" to it.
        self._temp = self.path.with_name(f".{self.path.name}.follower")
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._resume_refused = False
        self._fresh = False  # the next run restores a fresh copy beside the old one
        self._stop: anyio.Event | None = None  # set: stop the running `restore -f`
        self._spawned: anyio.Event | None = None  # set once the next one is spawned
        self._revive: anyio.Event | None = None  # set: follow again after giving up
        self._label = f"litestream {name!r}:"
        # Told after a fresh copy replaced the old file: connections opened before
        # still read the old, deleted file (the middleware disposes the app's pools).
        self._on_fresh_copy = on_fresh_copy
        self._on_update = on_update

    def __repr__(self) -> str:
        return f"Follower(path={str(self.path)!r}, replica={self.database.replica!r})"

    # -- lifecycle --

    async def run(self) -> None:
        """Follow until cancelled (or :meth:`aclose`); the child never outlives it."""
        self._finished = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._probe_loop)
                    await self._follow()
        finally:
            self._scope = None
            self._finished.set()

    async def aclose(self) -> None:
        """Stop following: SIGTERM, SIGKILL past ``grace``, reap. Never hangs (a
        Litestream blocked on a reader's lock ignores SIGTERM)."""
        if self._scope is not None:
            self._scope.cancel()
        if self._finished is not None:
            # No shield: cancelled, run()'s own finally still stops and reaps the child
            # (stop_process, shielded and bounded, is the one place that may not stop).
            with anyio.move_on_after(self.grace + 2 * REAP_LIMIT):
                await self._finished.wait()

    async def use_env(self, variables: Mapping[str, str | None], *,
                      secrets: Sequence[str] = ()) -> bool:
        """Follow with these environment variables (new S3 keys; None removes one) from
        now on, and scrub ``secrets`` too. A running `restore -f` is stopped and started
        again with them, and a follower that gave up follows again; True once the new
        one is spawned. False: none was running (the next one, and the next probe,
        start with them)."""
        use_variables(self._env, variables)
        self._secrets = tuple(dict.fromkeys((*self._secrets, *secrets)))
        stop, revive = self._stop, self._revive
        if stop is None and (revive is None or self._gave_up is None):
            return False
        spawned = self._spawned = anyio.Event()
        if stop is not None:
            stop.set()
        elif revive is not None:
            revive.set()  # given up: follow again, with them
        # Bounded: stopping takes at most grace and a reap; a new one starts at once.
        with anyio.move_on_after(self.grace + 2 * REAP_LIMIT):
            await spawned.wait()
        return spawned.is_set()

    async def probe(self) -> None:
        """Ask the replica for its head once and update the lag."""
        try:
            # A copy: the listing may run in a thread while use_env adds keys to ours.
            head = await probe_head(self.binary, self.database, dict(self._env),
                                    config_path=self._config_path,
                                    timeout=self.probe_timeout, secrets=self._secrets)
        except (OSError, TimeoutError, PositionError) as exc:
            self._lag.failed()
            self._probe_error = (f"cannot read the replica's position: "
                                 f"{exc or type(exc).__name__}")
            return
        self._probe_error = None
        self._lag.observe(head, self.copy_txid, time.monotonic())

    # -- inside --

    async def _follow(self) -> None:
        self._fresh = not self.path.exists()
        if not self._fresh and await _in_wal_mode(self.path):
            logger.info("%s the copy %s is in WAL mode (not made by a follower): restoring "
                        "a fresh copy beside it", self._label, self.path)
            self._fresh = True
        while True:
            revive = self._revive = anyio.Event()
            await run_restarting(self._follow_once, self._policy,
                                 on_restart=self._restarting, on_give_up=self._give_up)
            # Given up (the status says why) until new keys come (use_env): a key that
            # did not work yet may be what made it give up.
            await revive.wait()
            self._gave_up = None
            self._policy.reset()
            self._notify()

    async def _follow_once(self, restart: bool) -> Exited | None:
        """`restore -f` until it exits unasked: restored afresh whenever it cannot
        resume, started again when asked (use_env), looked at again while the replica
        is empty (none of these is an exit)."""
        if restart:
            self.restarts += 1
            self._fresh = self._resume_refused or not self.path.exists()
        waiting_since: float | None = None
        logged_at = 0.0
        while True:
            if self._fresh and waiting_since is None:
                logger.info("%s restoring a read-only copy of %s from %s", self._label,
                            self.path, self.database.replica)
            attempt = await self._attempt(self._fresh)
            now = time.monotonic()
            if attempt.refused is not None:
                logger.info("%s cannot resume following %s (%s): restoring a fresh copy "
                            "beside it; the old copy is read until it is replaced",
                            self._label, self.path, attempt.refused)
                self._resume_refused = self._fresh = True
                continue
            if attempt.restarted:  # asked for (use_env): no crash
                self._fresh = self._resume_refused or not self.path.exists()
                continue
            if not attempt.empty:
                break
            if waiting_since is None:
                waiting_since = logged_at = now
                logger.info("%s %s holds no backup yet: waiting for the primary's first "
                            "sync (checking every %gs)", self._label,
                            self.database.replica, _EMPTY_RETRY)
            elif now - logged_at >= _WAIT_LOG_EVERY:
                logged_at = now
                logger.info("%s still no backup in %s (%.0fs)", self._label,
                            self.database.replica, now - waiting_since)
            await anyio.sleep(_EMPTY_RETRY)
        self.last_exit_code = attempt.code
        lasting = lasting_failure(attempt, ever_ready=self.ready or self.generation > 0)
        if lasting is not None:
            self._gave_up = (f"cannot follow {self.database.replica}: {lasting.cause}. "
                             f"Fix: {lasting.fix} ({lasting.detail})")
            logger.error("%s %s; not retried: no restart can mend this", self._label,
                         self._gave_up)
            self._notify()
            return None  # not an exit to restart after: _follow waits for new keys
        ran_for = None if attempt.entered_at is None else now - attempt.entered_at
        return Exited(attempt.code, ran_for=ran_for, error=attempt.final_error)

    def _restarting(self, exited: Exited, decision: Restart) -> None:
        logger.warning("%s the follower of %s exited with code %s%s; restarting it in "
                       "%.1fs", self._label, self.path, exited.code, _reason(exited),
                       decision.delay)

    def _give_up(self, exited: Exited, decision: GiveUp) -> None:
        self._gave_up = (f"following stopped: Litestream exited {decision.exits} "
                         f"times within {self._policy.restart_window:g}s (last exit "
                         f"code {exited.code}{_reason(exited)})")
        logger.error("%s %s; the copy %s is no longer updated", self._label,
                     self._gave_up, self.path)
        self._notify()

    async def _attempt(self, fresh: bool) -> _Attempt:
        """Run one `restore -f` until it exits; fresh: into the temporary name, renamed
        over the copy once restored."""
        output = self._temp if fresh else self.path
        attempt = _Attempt(fresh=fresh, output=output)
        if fresh:
            _remove_restore_files(self._temp)
        command = self._command(output)

        def spawned(process: anyio.abc.Process) -> None:
            self._process = process
            if self._spawned is not None:
                self._spawned.set()
                self._spawned = None

        def overdue() -> None:
            logger.warning("litestream %r: the follower of %s did not stop within %gs; "
                           "killing it", self.name, self.path, self.grace)

        stop = self._stop = anyio.Event()
        try:
            await follow_once(command, attempt, env=self._env, grace=self.grace,
                              log=self._log, secrets=self._secrets, on_spawn=spawned,
                              on_entered=self._entered, on_applied=self._applied,
                              on_warning=self._warned, on_overdue=overdue, stop=stop)
        except OSError as exc:
            attempt.final_error = f"could not start {command[0]}: {exc}"
            return attempt
        finally:
            self._stop = None
            attempt.restarted = stop.is_set()
            if fresh and attempt.published:
                # Its position moves beside the copy, where a resume looks for it.
                _replace_if_exists(_txid_path(self._temp), _txid_path(self.path))
            elif fresh:
                _remove_restore_files(self._temp)
        return attempt

    async def _entered(self, attempt: _Attempt, txid: int | None) -> None:
        """Litestream follows: a fresh copy is renamed over the old one first."""
        if attempt.fresh:
            with anyio.CancelScope(shield=True):  # renamed means published
                await anyio.to_thread.run_sync(_publish, self._temp, self.path)
                attempt.published, self._resume_refused = True, False
                self.generation += 1
            logger.info("litestream %r: restored a copy of %s at txid %s; following "
                        "%s", self.name, self.path, txid, self.database.replica)
            if self._on_fresh_copy is not None:
                await self._on_fresh_copy(self.path)
        elif not self.ready:
            logger.info("litestream %r: resumed following %s at txid %s", self.name,
                        self.path, txid)
        self.ready = True
        self._set_txid(txid)

    async def _applied(self, txid: int | None) -> None:
        self.error = None
        if self._on_update is not None:
            # Litestream writes the primary's pages in place, and a WAL-mode
            # primary's page 1 keeps its change counter: a connection held open
            # keeps its page cache and never sees these rows. Drop the pools first.
            await self._on_update(self.path)
        self._set_txid(txid)

    def _warned(self, line: str) -> None:
        self.error = line

    def _command(self, output: Path) -> list[str]:
        # Through the config file when there is one: a password in the URL then stays
        # in the environment, out of the process list.
        if self._config_path is not None:
            return restore_command(self.binary, output=output, config_path=self._config_path,
                                   database=self.path, if_replica_exists=True,
                                   follow=self.interval)
        return restore_command(self.binary, output=output, replica_url=self.database.replica_url,
                               if_replica_exists=True, follow=self.interval)

    async def _probe_loop(self) -> None:
        try:
            await self.wait_ready(float("inf"))
        except StartupError:
            return  # following stopped for good: nothing to probe
        while True:
            await self.probe()
            await anyio.sleep(self.health_interval)


def _reason(exited: Exited) -> str:
    return f": {exited.error}" if exited.error else ""
