"""A lease in the replica: one writer across hosts, compatible with upstream's leaser.

Upstream Litestream (PR #1073: ``leaser.go``, ``s3/leaser.go``) keeps a lease in an
object ``<replica path>/lock.json`` holding Go's JSON of its ``Lease``::

    {"generation":3,"expires_at":"2026-11-30T14:00:00.123456789Z","owner":"host:4242"}

We read and write the same object the same way, so our apps and upstream's tools
exclude each other: ``_locks/lease_stores.py`` draws the conditional requests of acquire,
renew and release, on S3 and in a ``file://`` replica.

Expiry is compared with this host's wall clock, as upstream does: the hosts' clocks
must agree to well within the TTL, and a holder must renew well before it expires and
stop writing when it could not.

Every call of a :class:`LeaseStore` blocks: run it in a worker thread.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

from .._config.urls import redact_url
from .._exceptions import ConfigError, LitestreamError
from .._litestream.rfc3339 import format_time, parse_time

LOCK_NAME = "lock.json"  # upstream's DefaultLeasePath
_SCHEMES = ("s3", "file")
_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)  # what Go reads from a null
_NEVER = datetime.max.replace(tzinfo=timezone.utc)  # later than any expiry we can hold


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """One holding of the lease, as written in the replica."""

    generation: int
    expires_at: datetime
    owner: str
    etag: str = field(repr=False)  # names this exact version for If-Match

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError(f"expires_at={self.expires_at!r} must be timezone-aware")

    def expired(self, now: datetime | None = None) -> bool:
        """Past its expiry, so anyone may take it over (upstream's IsExpired)."""
        return (now or utc_now()) > self.expires_at

    def remaining(self, now: datetime | None = None) -> float:
        """Seconds until it expires (negative once expired)."""
        return (self.expires_at - (now or utc_now())).total_seconds()


class LeaseError(LitestreamError):
    """Base class of the lease errors."""


class LeaseHeld(LeaseError):
    """Someone else holds the lease."""

    def __init__(self, where: str, holder: str, expires_at: datetime) -> None:
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(
            f"the lease {where} is held by {holder or 'an unnamed owner'!r} until "
            f"{format_time(expires_at)}. Fix: stop the other writer, or wait for its "
            "lease to expire")


class LeaseLost(LeaseError):
    """The lease is no longer ours: someone else took it over (or removed it)."""


class LeaseStoreError(LeaseError):
    """The store did not answer usably: unreachable, timed out, an error status, or a
    lock object that is not a lease."""


class LeaseUnreadable(LeaseHeld, LeaseStoreError):
    """The lock object is there but is not a lease we can read (not JSON, wrong types).

    Read as held by an unknown owner for good: never taken over nor overwritten, as
    upstream, whose JSON decoding fails the same way, never takes it either. It may be
    another tool's live lock, and nothing in it says until when. Someone must delete
    it."""

    def __init__(self, where: str, why: str) -> None:
        self.holder = ""
        self.expires_at = _NEVER
        LeaseError.__init__(
            self, f"{where} is not a lease ({why}): read as held by an unknown owner, "
            "never overwritten. Fix: delete it if no writer uses it")


class LeaseStore(Protocol):
    """The lease of one replica. Every call blocks."""

    owner: str

    def read(self) -> Lease | None: ...

    def acquire(self, ttl: float) -> Lease:
        """Ours for ``ttl`` seconds, or LeaseHeld / LeaseStoreError."""
        ...

    def renew(self, lease: Lease, ttl: float) -> Lease:
        """Ours ``ttl`` seconds from now, or LeaseLost / LeaseStoreError."""
        ...

    def release(self, lease: Lease) -> None:
        """Free at once (nothing if already gone), or LeaseLost / LeaseStoreError."""
        ...

    def take_over(self, seen: Lease, ttl: float) -> Lease:
        """Take ``seen`` (unexpired) from a holder known to be gone: ours if the lock
        is still at ``seen.etag``, generation + 1; LeaseHeld / LeaseStoreError."""
        ...


def check_lease_possible(replica_url: str) -> None:
    """At startup, before anything is spawned: a lease in this replica is possible."""
    scheme = urlsplit(replica_url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            "replica_url", redact_url(replica_url), "a lease is kept in s3:// and file:// replicas "
            "only", "use an s3:// or file:// replica, or run without the lease")
    if scheme == "s3" and importlib.util.find_spec("boto3") is None:
        raise ConfigError(
            "replica_url", redact_url(replica_url), "the lease in an S3 replica is written with "
            "boto3, which is not installed", "pip install 'asgi-litestream[s3]'")


def default_owner() -> str:
    """``host:pid``, as upstream names a holder."""
    host = socket.gethostname()
    return f"{host}:{os.getpid()}" if host else f"pid-{os.getpid()}"


def encode(generation: int, expires_at: datetime, owner: str) -> bytes:
    """The lock object's bytes, as Go's json.Marshal writes upstream's Lease."""
    fields: dict[str, Any] = {"generation": generation, "expires_at": format_time(expires_at)}
    if owner:
        fields["owner"] = owner  # omitempty
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes, etag: str) -> Lease:
    """A lock object's lease; missing or null fields read as Go's zero values."""
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    generation = fields.get("generation", 0)
    generation = 0 if generation is None else generation
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise ValueError(f"generation={generation!r} is not an integer")
    expires_at = fields.get("expires_at")
    if expires_at is not None and not isinstance(expires_at, str):
        raise ValueError(f"expires_at={expires_at!r} is not a time")
    owner = fields.get("owner", "")
    owner = "" if owner is None else owner
    if not isinstance(owner, str):
        raise ValueError(f"owner={owner!r} is not a string")
    return Lease(generation=generation, owner=owner, etag=etag,
                 expires_at=_GO_ZERO_TIME if expires_at is None else _expiry(expires_at))


def _expiry(text: str) -> datetime:
    """``expires_at`` as upstream judges it. An offset can carry a time past Python's
    years 1-9999 in UTC ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"),
    which Go still reads and compares: past the end it is held for good (someone must
    delete it), before the start it is long expired, as Go's zero time is."""
    try:
        return parse_time(text)
    except OverflowError:
        return _NEVER if text.startswith("9999") else _GO_ZERO_TIME


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
