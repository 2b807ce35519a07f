"""One writer across hosts: hold the lease in the replica while replicating.

Our flock (_leader.py) keeps one Litestream per database on one host; a new pod on
another node during a rolling deploy replicates to the same replica while the old one
still writes, and two writers make the replica unrestorable. So, with ``lease=True``,
the leading worker holds ``<replica>/lock.json`` (upstream's leaser format, _lease.py)
for as long as its Litestream runs:

    acquire  wait (logging the holder every few seconds) until the lock is free or
             expired, then take it
    keep     renew every ``lease_ttl / 3``; when renewal fails until the lease could
             expire (``fence_margin`` before it does, for clock skew and a slow
             call), or someone else holds it, *fence*: the service kills Litestream
             at once (no final sync: that would be a write without the lease)
    release  after the final flush, so the successor takes it within a poll

The store is blocking (boto3); each call runs in a thread and is abandoned, not
awaited, past its deadline, so a hung S3 can never delay the fence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ._databases import Database
from ._leader import BOOT_ID
from ._lease import (
    LOCK_NAME,
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseStore,
    LeaseStoreError,
    lease_store,
)
from ._status import State
from ._urls import join_url, redact_url

if TYPE_CHECKING:
    from ._config import Settings
    from ._keeper import Keeper

logger = logging.getLogger("asgi_litestream")

_ACQUIRE_POLL = 0.5  # a released lease is taken within this
_RETRY = 1.0  # after a failed renewal
_LOG_EVERY = 5.0  # while waiting: one line per this many seconds
_CALL_TIMEOUT = 5.0  # one call to the store, at most (less for a short ttl)


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
        self._renewed_at: float | None = None  # monotonic

    @classmethod
    def of(cls, settings: Settings, env: Mapping[str, str]) -> LeaseKeeper:
        """The lease of these settings (in the first database's replica); ``env`` is
        Litestream's environment, whose credentials reach the store."""
        store = lease_store(settings.lease_replica, env,
                            timeout=min(_CALL_TIMEOUT, settings.lease_ttl / 6))
        return cls(store, ttl=settings.lease_ttl, name=settings.name,
                   where=redact_url(join_url(settings.lease_replica, LOCK_NAME)))

    @property
    def fence_margin(self) -> float:
        """Fence this long before the lease could expire: renewal calls time out
        within it, and it absorbs this much clock skew between hosts."""
        return max(self.ttl / 6, 1.0)

    async def acquire(self, *, give_up: Callable[[], bool],
                      inherit_from: str | None = None) -> bool:
        """Wait until we hold the lease (True), or until ``give_up()`` (False).
        ``inherit_from``: a holder known to be gone (the previous leading worker of
        this host, see _service._lead), whose unexpired lease is taken over at once
        rather than after its TTL."""
        logged_at = -_LOG_EVERY
        while not give_up():
            try:
                self.lease = await self._call(self.store.acquire, self.ttl)
            except LeaseHeld as held:
                if inherit_from is not None and held.holder == inherit_from:
                    try:
                        self.lease = await self._inherit(inherit_from)
                    except (LeaseHeld, LeaseStoreError, TimeoutError) as exc:
                        logger.warning("litestream %r: could not take over the lease %s "
                                       "from %s: %s", self.name, self.where, inherit_from,
                                       exc or "timed out")
                        inherit_from = None  # only once: then as anyone would
                    if self.lease is not None:
                        return self._held()

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
                self.last_error = str(exc) or "timed out"
                if time.monotonic() - logged_at >= _LOG_EVERY:
                    logged_at = time.monotonic()
                    logger.warning("litestream %r: cannot take the lease %s: %s; retrying",
                                   self.name, self.where, self.last_error)
                await anyio.sleep(_RETRY)
                continue
            return self._held()
        return False

    async def _inherit(self, holder: str) -> Lease | None:
        seen = await self._call(self.store.read)
        if seen is None or seen.owner != holder:
            return None
        lease: Lease = await self._call(self.store.take_over, seen, self.ttl)
        logger.warning("litestream %r: took over the lease %s from %s, the previous "
                       "leading worker of this host, which is gone", self.name,
                       self.where, holder)
        return lease

    def _held(self) -> bool:
        assert self.lease is not None
        self._renewed_at = time.monotonic()
        self.seen, self.fenced_because, self.last_error = None, None, None
        logger.info("litestream %r: holds the lease %s (generation %d, until %s)",
                    self.name, self.where, self.lease.generation,
                    _clock(self.lease.expires_at))
        return True

    async def keep(self) -> str | None:
        """Renew until released (None) or fenced: the lease lost or about to expire
        unrenewed (why, once logged)."""
        while self.lease is not None:
            assert self._renewed_at is not None
            deadline = self._renewed_at + self.ttl - self.fence_margin
            await anyio.sleep(min(self.ttl / 3, max(deadline - time.monotonic(), 0)))
            lease = self.lease
            if lease is None:
                return None  # released meanwhile
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    renewed = await self._call(self.store.renew, lease, self.ttl)
            except LeaseLost:
                return self._fenced(f"the lease was taken over{await self._holder()}")
            except (LeaseStoreError, TimeoutError) as exc:
                self.last_error = str(exc) or "timed out"
                if time.monotonic() >= deadline:
                    return self._fenced("could not renew the lease for "
                                        f"{time.monotonic() - self._renewed_at:.1f}s "
                                        f"({self.last_error})")
                logger.warning("litestream %r: renewing the lease %s failed: %s; fencing "
                               "in %.1fs unless a retry works", self.name, self.where,
                               self.last_error, deadline - time.monotonic())
                await anyio.sleep(min(_RETRY, max(deadline - time.monotonic(), 0)))
                continue
            if self.lease is lease:  # not released while the call ran
                self.lease, self._renewed_at, self.last_error = (
                    renewed, time.monotonic(), None)
        return None

    async def release(self) -> None:
        """Give the lease back (after the final flush), so a successor takes it now
        rather than after the TTL. A failure only costs the successor the TTL."""
        lease, self.lease = self.lease, None
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

    def to_json(self) -> dict[str, Any]:
        """Holder, generation, expiry and our part, for the status route."""
        held = self.lease
        shown = held or self.seen
        return {
            "role": ("holder" if held else "fenced" if self.fenced_because
                     else "waiting"),
            "holder": shown.owner if shown else None,
            "generation": held.generation if held else None,
            "expires_at": shown.expires_at.isoformat() if shown else None,
            "expires_in_s": round(_left(shown.expires_at), 1) if shown else None,
            "ttl_s": self.ttl,
            "fenced_because": self.fenced_because,
            "error": self.last_error,
        }

    def _fenced(self, why: str) -> str:
        self.lease, self.fenced_because = None, why
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

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        # Abandoned, not awaited, when the caller's deadline passes: boto3 cannot be
        # interrupted, and a fence must never wait on S3.
        return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True)


async def hold_the_lease(lease: LeaseKeeper, keeper: Keeper, *,
                         behind: Callable[[], Awaitable[list[tuple[Database, int, int]]]],
                         give_up: Callable[[], bool]) -> None:
    """While Litestream runs: renew; fenced, kill it at once (no final sync), win the
    lease back and replicate again, unless the replica moved on meanwhile (someone
    else wrote): restoring under the running app would swap the file beneath its
    open connections, so it stays fenced and says to restart."""
    while await lease.keep() is not None:
        await keeper.kill(State.FENCED)
        if not await lease.acquire(give_up=give_up):
            return
        moved_on = await behind()
        if moved_on:
            db, ours, theirs = moved_on[0]
            await lease.release()
            lease.fenced_because = (f"the replica moved on while this app was fenced "
                                    f"({db.path}: txid {ours} here, {theirs} in the replica)")
            logger.error("litestream %r: FENCED for good: %s. Fix: restart the app; it "
                         "restores the replica's copy before replicating", lease.name,
                         lease.fenced_because)
            return
        logger.info("litestream %r: the lease is ours again; replicating again", lease.name)
        await keeper.start()


def lease_heir(previous: dict[str, object]) -> str | None:
    """The lease owner we may take over from at once: the worker that led before us
    on this kernel. We hold the leader flock now, which that worker and its Litestream
    held until they were gone, and a flock means something only on one kernel (the
    same boot id): never across hosts, where only the lease's expiry is proof."""
    owner = previous.get("lease_owner")
    if isinstance(owner, str) and BOOT_ID is not None and previous.get("boot_id") == BOOT_ID:
        return owner
    return None


def _left(when: datetime) -> float:
    return (when - datetime.now(timezone.utc)).total_seconds()


def _clock(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%H:%M:%S UTC")
