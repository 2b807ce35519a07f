"""What the leading worker publishes to the others (:class:`LeaderInfo`, in its leader
lock file, _locks/workers.py), and the lease and the S3 keys as the status shows them
(:class:`LeaseStatus`, :class:`CredentialsStatus`: never a key).

Both are read back from JSON another process wrote, maybe mid-write or by an older
version of this library: ``from_json`` never raises. A value of the wrong type reads
as its default, and text that is not a JSON object as no news at all (None).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .._litestream.refusals import KeyRefusal, iso
from .._state import State

_T = TypeVar("_T")
_STATES = {state.value for state in State}


def _get(data: Mapping[str, Any], key: str, kind: type[_T] | tuple[type, ...],
         default: _T) -> _T:
    """``data[key]`` when it is of ``kind`` (never a bool for a number), else ``default``."""
    value = data.get(key, default)
    if isinstance(value, bool) and kind is not bool:
        return default
    return value if isinstance(value, kind) else default  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseStatus:
    """The lease (``lease=True``) as the status route shows it: ours, or the holder's
    while we wait."""

    role: str  # "holder", "fenced" or "waiting"
    holder: str | None = None
    generation: int | None = None
    expires_at: str | None = None  # ISO 8601
    expires_in_s: float | None = None  # as of when this was made
    ttl_s: float = 0.0
    fenced_because: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "holder": self.holder, "generation": self.generation,
                "expires_at": self.expires_at, "expires_in_s": self.expires_in_s,
                "ttl_s": self.ttl_s, "fenced_because": self.fenced_because,
                "error": self.error}

    @classmethod
    def from_json(cls, data: object) -> LeaseStatus | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("role"), str):
            return None
        return cls(role=data["role"], holder=_get(data, "holder", str, None),
                   generation=_get(data, "generation", int, None),
                   expires_at=_get(data, "expires_at", str, None),
                   expires_in_s=_get(data, "expires_in_s", (int, float), None),
                   ttl_s=_get(data, "ttl_s", (int, float), 0.0),
                   fenced_because=_get(data, "fenced_because", str, None),
                   error=_get(data, "error", str, None))


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsStatus:
    """The S3 keys in use, as the status route shows them: where they came from, when
    they were loaded, and whether the storage refuses them. Never the keys."""

    source: str  # "option", "file", "environment", "default chain" or "call"
    loaded_at: str  # ISO 8601
    rejected_since: str | None = None  # ISO 8601; None: not refused (as far as known)
    problem: str | None = None  # the refusal in plain words ("the access key id is...")
    rotations: int = 0  # since startup
    last_pause_s: float | None = None  # the last rotation: flush to running again

    @classmethod
    def of(cls, *, source: str, loaded_at: datetime, refusal: KeyRefusal, rotations: int,
           last_pause_s: float | None = None) -> CredentialsStatus:
        """The record of the keys in use now (a primary's or a read replica's)."""
        return cls(source=source, loaded_at=iso(loaded_at),
                   rejected_since=None if refusal.since is None else iso(refusal.since),
                   problem=None if refusal.failure is None else refusal.failure.cause,
                   rotations=rotations,
                   last_pause_s=None if last_pause_s is None else round(last_pause_s, 3))

    @property
    def rejected(self) -> bool:
        return self.rejected_since is not None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "loaded_at": self.loaded_at,
                "state": "rejected" if self.rejected else "ok",
                "rejected_since": self.rejected_since, "problem": self.problem,
                "rotations": self.rotations, "last_pause_s": self.last_pause_s}

    @classmethod
    def from_json(cls, data: object) -> CredentialsStatus | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("source"), str):
            return None
        return cls(source=data["source"], loaded_at=_get(data, "loaded_at", str, ""),
                   rejected_since=_get(data, "rejected_since", str, None),
                   problem=_get(data, "problem", str, None),
                   rotations=_get(data, "rotations", int, 0),
                   last_pause_s=_get(data, "last_pause_s", (int, float), None))


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderInfo:
    """The leading worker as it last told the others: who, in what state, where its
    control socket is, and what its own status route would say of Litestream."""

    pid: int | None  # the leading worker
    state: State | None = None  # None: not said, or a state this version does not know
    socket: str | None = None  # its Litestream's control socket
    litestream_pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    version: str | None = None  # Litestream's
    name: str | None = None
    metrics_addr: str | None = None  # its Litestream's /metrics
    # The last verification, as Verification.to_json() wrote it (that record lives above
    # this layer): shown as it is.
    verification: Mapping[str, Any] | None = None
    lease: LeaseStatus | None = None
    lease_owner: str | None = None  # the owner name it holds the lease under
    boot_id: str | None = None  # its kernel's (see lease_heir)
    # The keys its Litestream runs with: where from, and whether they are refused.
    credentials: CredentialsStatus | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": None if self.state is None else self.state.value,
                "socket": self.socket, "litestream_pid": self.litestream_pid,
                "restarts": self.restarts, "version": self.version,
                "last_exit_code": self.last_exit_code, "name": self.name,
                "metrics_addr": self.metrics_addr,
                "verification": None if self.verification is None else dict(self.verification),
                "lease": None if self.lease is None else self.lease.to_json(),
                "lease_owner": self.lease_owner, "boot_id": self.boot_id,
                "credentials": None if self.credentials is None
                else self.credentials.to_json()}

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> LeaderInfo | None:
        """The record in ``text``; None when it is not a JSON object (nobody published
        yet, or caught mid-write: ask again)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        said = data.get("state")
        state = State(said) if said in _STATES else None
        verification = data.get("verification")
        return cls(pid=_get(data, "pid", int, None), state=state,
                   socket=_get(data, "socket", str, None),
                   litestream_pid=_get(data, "litestream_pid", int, None),
                   restarts=_get(data, "restarts", int, 0),
                   last_exit_code=_get(data, "last_exit_code", int, None),
                   version=_get(data, "version", str, None),
                   name=_get(data, "name", str, None),
                   metrics_addr=_get(data, "metrics_addr", str, None),
                   verification=verification if isinstance(verification, dict) else None,
                   lease=LeaseStatus.from_json(data.get("lease")),
                   lease_owner=_get(data, "lease_owner", str, None),
                   boot_id=_get(data, "boot_id", str, None),
                   credentials=CredentialsStatus.from_json(data.get("credentials")))

    def lease_heir(self, boot_id: str | None) -> str | None:
        """The lease owner a successor may take over from at once: this leader's, when
        it ran on the successor's kernel (``boot_id``). The successor holds the leader
        flock, which this worker and its Litestream held until they were gone, and a
        flock means something only on one kernel (the same boot id): never across
        hosts, where only the lease's expiry is proof."""
        if self.lease_owner is not None and boot_id is not None and self.boot_id == boot_id:
            return self.lease_owner
        return None
