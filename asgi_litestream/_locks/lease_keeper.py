"""One writer across hosts: hold the lease in the replica while replicating.

Our flock (_locks/workers.py) keeps one Litestream per database on one host; a new pod on
another node during a rolling deploy replicates to the same replica while the old one
still writes, and two writers make the replica unrestorable. So, with ``lease=True``,
the leading worker holds ``<replica>/lock.json`` (upstream's leaser format, _locks/lease.py)
for as long as its Litestream runs:

    acquire  wait (logging the holder every few seconds) until the lock is free or
             expired, then take it
    keep     renew every ``lease_ttl / 3``; when renewal fails until the lease could
             expire (``fence_margin`` before it does, for clock skew), or someone
             else holds it, *fence*: kill Litestream at once (no final sync: that
             would be a write without the lease)
    release  after the final flush, so the successor takes it within a poll

The clock of a holding starts *before* the call that won or renewed it: the store
stamps the expiry (its wall clock + TTL) before its request, and a slow call that
succeeds must not push our deadline past that expiry. The deadline (that moment +
TTL - margin, monotonic) is enforced twice: by the watchdog thread (_locks/watchdog.py),
which SIGKILLs the child there even while the event loop is stalled, and by keep()
on the loop, which does the orderly part (state, log, winning the lease back).

The store is blocking (boto3); each call runs in a thread of its own small limiter
(never queued behind the app's sync endpoints on anyio's default one), bounded by
the store's timeouts (``fence_margin / 4`` to connect and to read, no retries) and
abandoned, not awaited, past its deadline, so a hung S3 can never delay the fence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from .._config.urls import join_url, redact_url
from .._exceptions import StartupError
from .._litestream.replica_errors import classify
from .._litestream.rfc3339 import format_time
from .._state import State
from .leader_info import LeaseStatus
from .lease import (
    LOCK_NAME,
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseStore,
    LeaseStoreError,
    LeaseUnreadable,
)
from .lease_stores import lease_store
from .watchdog import Killable, Watchdog

if TYPE_CHECKING:
    from .._config.settings import Settings

logger = logging.getLogger("asgi_litestream")

_ACQUIRE_POLL = 0.5  # a released lease is taken within this
_RETRY = 1.0  # after a failed renewal
_LOG_EVERY = 5.0  # while waiting: one line per this many seconds
_SOCKET_TIMEOUT = 5.0  # to connect, and to read, at most (less for a short ttl)
# Lease calls at once: a renewal, a read naming the new holder, a release. Never
# anyio's default limiter, which 40 busy sync endpoints of the app exhaust.
_LEASE_THREADS = 4


class Fenced(Protocol):
    """What the lease fences: the keeper of this worker's Litestream (_primary/keeper.py),
    seen from below. It runs Litestream only while the watchdog allows."""

    @property
    def child(self) -> Killable | None: ...

    def use_watchdog(self, watchdog: Watchdog) -> None: ...

    async def start(self) -> None: ...

    async def kill(self, state: State) -> None: ...


def fence_margin(ttl: float) -> float:
    """Fence this long before a lease of ``ttl`` seconds could expire; it absorbs this
    much clock skew between hosts."""
    return max(ttl / 6, 1.0)


class LeaseKeeper:
    """Acquire, renew and release one lease; tell the service when to fence."""

    def __init__(self, store: LeaseStore, *, ttl: float, name: str, where: str) -> None:
        self.store = store
        self.ttl = ttl
        self.name = name
        self.where = where  # the lock's location, credentials redacted, for the logs
        self.lease: Lease | None = None  # ours, while held
        self.seen: Lease | None = None  # the holder's, while we wait
        self.fenced_because: str | None = None
        self.last_error: str | None = None
        self.watchdog = Watchdog(name)  # kills Litestream at the deadline (guard())
        self._held_from: float | None = None  # monotonic, before the call that won it
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop
        self._unreadable: str | None = None  # the unreadable lock last logged

    @classmethod
    def of(cls, settings: Settings, env: Mapping[str, str]) -> LeaseKeeper:
        """The lease of these settings (in the first database's replica); ``env`` is
        Litestream's environment, whose credentials reach the store."""
        # Connect plus read (no retries) within half the margin: a renewal answers
        # well before its deadline, or fails in time for another try.
        store = lease_store(settings.lease_replica, env,
                            timeout=min(_SOCKET_TIMEOUT, fence_margin(settings.lease_ttl) / 4))
        return cls(store, ttl=settings.lease_ttl, name=settings.name,
                   where=redact_url(join_url(settings.lease_replica, LOCK_NAME)))

    @property
    def fence_margin(self) -> float:
        """Fence this long before the lease could expire (clock skew between hosts)."""
        return fence_margin(self.ttl)

    @property
    def deadline(self) -> float | None:
        """When Litestream must be dead unless the lease is renewed first (monotonic):
        the TTL from the moment *before* the call that last won or renewed it, less the
        margin. The expiry in the store is later: the store stamps it after that."""
        if self._held_from is None:
            return None
        return self._held_from + self.ttl - self.fence_margin

    def guard(self, keeper: Fenced) -> None:
        """Let ``keeper`` run Litestream only while the lease is ours, and have the
        watchdog kill its child at the deadline. Call it before the first start (it
        may be called again)."""
        keeper.use_watchdog(self.watchdog)
        self.watchdog.watch(keeper.child)

    async def acquire(self, *, give_up: Callable[[], bool],
                      inherit_from: str | None = None, fail_fast: bool = False) -> bool:
        """Wait until we hold the lease (True), or until ``give_up()`` (False).
        ``inherit_from``: a holder known to be gone (the previous leading worker of
        this host, see LeaderInfo.lease_heir), whose unexpired lease is taken over at once
        rather than after its TTL. ``fail_fast``: a permanent error (_replica_errors)
        raises StartupError rather than wait (at boot; once replicating, S3's bad
        day is waited out)."""
        logged_at = -_LOG_EVERY
        while not give_up():
            started = time.monotonic()
            try:
                self.lease = await self._call(self.store.acquire, self.ttl)
            except LeaseUnreadable as unreadable:
                # Held by an unknown owner until someone deletes it (see _locks/lease.py);
                # said once, then shown in the status.
                self.seen, self.last_error = None, str(unreadable)
                if self._unreadable != self.last_error:
                    self._unreadable = self.last_error
                    logger.error("litestream %r: not replicating: %s", self.name,
                                 self.last_error)
                await anyio.sleep(_ACQUIRE_POLL)
                continue
            except LeaseHeld as held:
                self._unreadable = None
                if inherit_from is not None and held.holder == inherit_from:
                    try:
                        inherited = await self._inherit(inherit_from)
                    except (LeaseHeld, LeaseStoreError, TimeoutError) as exc:
                        inherited = None
                        logger.warning("litestream %r: could not take over the lease %s "
                                       "from %s: %s", self.name, self.where, inherit_from,
                                       exc or "timed out")
                        inherit_from = None  # only once: then as anyone would
                    if inherited is not None:
                        self.lease, started = inherited
                        return self._held(started)

                self.seen = Lease(generation=0, expires_at=held.expires_at,
                                  owner=held.holder, etag="")
                self.last_error = None
                if time.monotonic() - logged_at >= _LOG_EVERY:
                    logged_at = time.monotonic()
                    logger.warning(
                        "litestream %r: waiting for the lease %s, held by %s until %s "
                        "(%.0fs left); not replicating until then", self.name, self.where,
                        held.holder, _clock(held.expires_at), _left(held.expires_at))
                await anyio.sleep(_ACQUIRE_POLL)
                continue
            except (LeaseStoreError, TimeoutError) as exc:
                self._unreadable = None
                self.last_error = str(exc) or "timed out"
                failure = classify(exc)
                if failure.permanent and fail_fast:
                    # No bucket, refused keys...: waiting cannot mend it (#21).
                    raise StartupError(f"cannot take the lease {self.where}: "
                                       f"{failure.cause}. Fix: {failure.fix} "
                                       f"({failure.detail})") from None
                if time.monotonic() - logged_at >= _LOG_EVERY:
                    logged_at = time.monotonic()
                    logger.warning("litestream %r: cannot take the lease %s: %s; retrying",
                                   self.name, self.where, self.last_error)
                await anyio.sleep(_RETRY)
                continue
            return self._held(started)
        return False

    async def _inherit(self, holder: str) -> tuple[Lease, float] | None:
        """The holder's lease taken over, and the moment before the call that did it."""
        seen = await self._call(self.store.read)
        if seen is None or seen.owner != holder:
            return None
        started = time.monotonic()
        lease: Lease = await self._call(self.store.take_over, seen, self.ttl)
        logger.warning("litestream %r: took over the lease %s from %s, the previous "
                       "leading worker of this host, which is gone", self.name,
                       self.where, holder)
        return lease, started

    def _hold_from(self, started: float) -> None:
        """The lease is ours as of ``started`` (taken before the call that won or
        renewed it): the watchdog kills Litestream at the new deadline."""
        self._held_from = started
        self.watchdog.arm(started + self.ttl - self.fence_margin)

    def _held(self, started: float) -> bool:
        assert self.lease is not None
        self._hold_from(started)
        self._unreadable = None
        self.seen, self.fenced_because, self.last_error = None, None, None
        logger.info("litestream %r: holds the lease %s (generation %d, until %s)",
                    self.name, self.where, self.lease.generation,
                    _clock(self.lease.expires_at))
        return True

    async def keep(self) -> str | None:
        """Renew until released (None) or fenced: the lease lost or about to expire
        unrenewed (why, once logged)."""
        wait = self.ttl / 3
        while self.lease is not None:
            deadline = self.deadline
            assert deadline is not None and self._held_from is not None
            await anyio.sleep(max(min(wait, deadline - time.monotonic()), 0))
            lease = self.lease
            if lease is None:
                return None  # released meanwhile
            started = time.monotonic()
            try:
                renewed = await self._call(self.store.renew, lease, self.ttl,
                                           within=deadline - started)
            except LeaseLost:
                return self._fenced(f"the lease was taken over{await self._holder()}")
            except (LeaseStoreError, TimeoutError) as exc:
                self.last_error = str(exc) or "timed out"
                if time.monotonic() >= deadline:
                    return self._fenced("could not renew the lease for "
                                        f"{time.monotonic() - self._held_from:.1f}s "
                                        f"({self.last_error})")
                logger.warning("litestream %r: renewing the lease %s failed: %s; fencing "
                               "in %.1fs unless a retry works", self.name, self.where,
                               self.last_error, deadline - time.monotonic())
                wait = _RETRY
                continue
            if self.lease is lease:  # not released while the call ran
                self.lease, self.last_error = renewed, None
                self._hold_from(started)
            wait = self.ttl / 3
        return None

    async def release(self) -> None:
        """Give the lease back (after the final flush), so a successor takes it now
        rather than after the TTL. A failure only costs the successor the TTL."""
        lease, self.lease = self.lease, None
        self.watchdog.disarm()  # Litestream is stopped by now
        if lease is None:
            return
        try:
            await self._call(self.store.release, lease)
        except (LeaseLost, LeaseStoreError, TimeoutError) as exc:
            logger.warning("litestream %r: could not release the lease %s (%s); a "
                           "successor takes it when it expires at %s", self.name,
                           self.where, exc or "timed out", _clock(lease.expires_at))
            return
        logger.info("litestream %r: released the lease %s", self.name, self.where)

    def status(self) -> LeaseStatus:
        """Holder, generation, expiry and our part, for the status route."""
        held = self.lease
        shown = held or self.seen
        return LeaseStatus(
            role="holder" if held else "fenced" if self.fenced_because else "waiting",
            holder=shown.owner if shown else None,
            generation=held.generation if held else None,
            expires_at=shown.expires_at.isoformat() if shown else None,
            expires_in_s=round(_left(shown.expires_at), 1) if shown else None,
            ttl_s=self.ttl, fenced_because=self.fenced_because, error=self.last_error)

    def fence_for_good(self, why: str) -> None:
        """The lease is given back and will not be taken again: ``why`` is shown."""
        self.lease, self.fenced_because = None, why

    def _fenced(self, why: str) -> str:
        self.lease, self.fenced_because = None, why
        self.watchdog.expire()  # killed now, even if the keeper's lock is busy (a flush)
        logger.error("litestream %r: FENCED: %s. Litestream is stopped at once (no final "
                     "sync), durable writes fail and readiness answers 503 until the lease "
                     "is ours again", self.name, why)
        return why

    async def _holder(self) -> str:
        try:
            found = await self._call(self.store.read)
        except (LeaseStoreError, TimeoutError):
            return ""
        return f" by {found.owner}" if found else ""

    async def _call(self, function: Callable[..., Any], *args: Any,
                    within: float | None = None) -> Any:
        """``function(*args)`` in a thread of the lease's own limiter; TimeoutError past
        ``within`` seconds (by default, as long as a fresh lease would last us)."""
        # Abandoned, not awaited, past the deadline: boto3 cannot be interrupted, and a
        # fence must never wait on S3. An abandoned call gives its token back.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(_LEASE_THREADS)
        with anyio.fail_after(max(self.ttl - self.fence_margin if within is None
                                  else within, 0)):
            return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True,
                                                  limiter=self._limiter)


def _left(when: datetime) -> float:
    return (when - datetime.now(timezone.utc)).total_seconds()


def _clock(when: datetime) -> str:
    if abs(_left(when)) > 86400:  # not today (upstream's lock may say "for good")
        return format_time(when)
    return when.astimezone(timezone.utc).strftime("%H:%M:%S UTC")
