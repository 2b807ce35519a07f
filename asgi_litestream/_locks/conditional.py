"""The lease protocol over any store with three conditional primitives (create,
replace, delete), as upstream's leaser makes it; _locks/lease_stores.py says what each
call sends, and draws the primitives on S3 and in a ``file://`` replica."""

from __future__ import annotations

import logging
from datetime import timedelta

from .lease import (
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseStoreError,
    LeaseUnreadable,
    decode,
    encode,
    utc_now,
)

logger = logging.getLogger("asgi_litestream")


def check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"ttl={ttl!r}: a lease lasts a positive number of seconds")


class Conflict(Exception):
    """The object is not the version the write named (412), or is gone (404)."""

    def __init__(self, *, gone: bool = False) -> None:
        super().__init__("gone" if gone else "another version")
        self.gone = gone


class ConditionalStore:
    """acquire / renew / release from three conditional primitives."""

    where: str  # the lock object, for messages

    def __init__(self, *, owner: str, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r}, owner={self.owner!r})"

    def _get(self) -> tuple[bytes, str] | None:
        """The object's bytes and etag, or None."""
        raise NotImplementedError

    def _put(self, data: bytes, etag: str | None) -> str:
        """Write if the object is at ``etag`` (None: if there is none); the new etag.
        Conflict if not."""
        raise NotImplementedError

    def _delete(self, lease: Lease) -> None:
        """Remove if the object is at ``lease.etag``; Conflict if it is another; nothing
        if there is none."""
        raise NotImplementedError

    def read(self) -> Lease | None:
        found = self._get()
        if found is None:
            return None
        try:
            return decode(*found)
        except ValueError as exc:  # json's errors are ValueErrors too
            # Held by someone unknown (a LeaseHeld), so acquire() waits; and a store
            # error to whoever only reads it.
            raise LeaseUnreadable(self.where, str(exc)) from None

    def acquire(self, ttl: float) -> Lease:
        check_ttl(ttl)
        current = self.read()
        for _ in range(2):  # a second try only if the race was with a release
            if current is not None and not current.expired():
                raise LeaseHeld(self.where, current.owner, current.expires_at)
            try:
                lease = self._write(current.generation + 1 if current else 1, ttl,
                                    current.etag if current else None)
            except Conflict:
                current = self.read()  # another writer won: name them
                continue
            logger.debug("lease %s acquired: generation %d, owner %s, until %s",
                         self.where, lease.generation, lease.owner, lease.expires_at)
            return lease
        raise LeaseStoreError(f"the lease {self.where} changed under every attempt to "
                              "acquire it. Fix: retry")

    def renew(self, lease: Lease, ttl: float) -> Lease:
        check_ttl(ttl)
        try:
            renewed = self._write(lease.generation, ttl, lease.etag)
        except Conflict:
            raise LeaseLost(f"the lease {self.where} (generation {lease.generation}) is no "
                            "longer ours: another writer took it over") from None
        logger.debug("lease %s renewed until %s", self.where, renewed.expires_at)
        return renewed

    def release(self, lease: Lease) -> None:
        try:
            self._delete(lease)
        except Conflict:
            raise LeaseLost(f"the lease {self.where} (generation {lease.generation}) is no "
                            "longer ours to release: another writer took it over") from None
        logger.debug("lease %s released", self.where)

    def take_over(self, seen: Lease, ttl: float) -> Lease:
        check_ttl(ttl)
        try:
            lease = self._write(seen.generation + 1, ttl, seen.etag)
        except Conflict:
            current = self.read()
            if current is None:
                raise LeaseStoreError(f"the lease {self.where} was released meanwhile. "
                                      "Fix: acquire it") from None
            raise LeaseHeld(self.where, current.owner, current.expires_at) from None
        logger.debug("lease %s taken over from %s: generation %d", self.where,
                     seen.owner, lease.generation)
        return lease

    def _write(self, generation: int, ttl: float, etag: str | None) -> Lease:
        expires_at = utc_now() + timedelta(seconds=ttl)
        new_etag = self._put(encode(generation, expires_at, self.owner), etag)
        return Lease(generation=generation, expires_at=expires_at, owner=self.owner,
                     etag=new_etag)
