"""The status route's JSON, encoded by the piece: byte for byte the snapshot's JSON,
without paying for a thousand databases on every probe.

The head (state, uptime...) is re-encoded whenever the snapshot's key changes (every
100 ms at most); the databases' part once per health poll, when the snapshot brings a
new tuple of them. Even then most of each database's JSON is what it was: its path,
replica and positions change with a write, its health and errors seldom. Those parts
are kept by database, encoded, and only its delay and ``last_sync_at`` (which an idle
Litestream moves every few seconds for every database) are encoded anew.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Any

from .._primary.database_health import DatabaseStatus
from .._primary.status import StatusSnapshot

# What anyone may read: the probe's answer (the status route's, before startup too).
PUBLIC_FIELDS = ("status", "state", "healthy", "restarts")
_SYNC = ',"last_sync_at":'
_HEAD_KEYS = ("path", "replica", "litestream_status", "txid", "replicated_txid", "lag")
_TAIL_KEYS = ("healthy", "error", "last_errors")
_HEAD, _TAIL = attrgetter(*_HEAD_KEYS), attrgetter(*_TAIL_KEYS)
_BEHIND, _SYNCED = attrgetter("behind_s"), attrgetter("last_sync_at")
_FLOAT = float.__repr__  # json.dumps' own, for a finite float
_Head = tuple[str, str, str | None, int | None, int | None, int | None]
_Tail = tuple[bool | None, str | None, tuple[str, ...]]


class StatusBody:
    """The status route's bodies (the details and the probe's answer) for successive
    snapshots, each part re-encoded only when what it shows changed."""

    def __init__(self) -> None:
        self._databases: tuple[DatabaseStatus, ...] | None = None
        self._databases_json = b"[]"
        # What each database's JSON shows but its delay and last sync, by database,
        # and the array's JSON with a %s for each of those two (a template).
        self._keys: tuple[list[_Head], list[_Tail]] = ([], [])
        self._template = "[]"
        self._heads: dict[_Head, str] = {}
        self._tails: dict[_Tail, str] = {}

    def render(self, status: StatusSnapshot) -> tuple[bytes, bytes]:
        """The details, and the probe's answer."""
        head = status.to_json(databases=False)
        public = dumps({field: head.get(field) for field in PUBLIC_FIELDS})
        full = dumps(head)[:-1] + b',"databases":' + self.databases(status.databases) + b"}"
        return full, public

    def databases(self, databases: tuple[DatabaseStatus, ...]) -> bytes:
        """The JSON array of ``databases`` (the same tuple as last time: as it was)."""
        if databases is self._databases:
            return self._databases_json
        keys = (list(map(_HEAD, databases)), list(map(_TAIL, databases)))
        if keys != self._keys:  # a position, a health or an error changed somewhere
            self._template = self._new_template(databases, *keys)
            self._keys = keys
        values = [""] * (2 * len(databases))  # each database's delay, then its last sync
        values[::2] = [_FLOAT(x) if type(x) is float and x - x == 0.0 else _number(x)
                       for x in map(_BEHIND, databases)]
        values[1::2] = ["null" if x is None else encode_basestring_ascii(x)
                        for x in map(_SYNCED, databases)]
        self._databases = databases
        self._databases_json = (self._template % tuple(values)).encode()
        return self._databases_json

    def _new_template(self, databases: tuple[DatabaseStatus, ...], heads: list[_Head],
                      tails: list[_Tail]) -> str:
        known_heads, known_tails = self._heads, self._tails
        self._heads, self._tails = {}, {}  # only what is shown now is kept
        parts = []
        for db, head, tail in zip(databases, heads, tails, strict=True):
            head_json = self._heads[head] = (self._heads.get(head) or known_heads.get(head)
                                             or _head(db))
            tail_json = self._tails[tail] = (self._tails.get(tail) or known_tails.get(tail)
                                             or _tail(db))
            parts.append(f"{head_json}%s{_SYNC}%s{tail_json}")
        return "[" + ",".join(parts) + "]"


def dumps(value: Any) -> bytes:
    """Compact JSON, ASCII only, as every one of the routes' bodies."""
    return json.dumps(value, separators=(",", ":")).encode()


def _head(db: DatabaseStatus) -> str:
    """``{"path":...,"lag":...,"behind_s":`` (to_json's keys, in its order), with any
    ``%`` doubled for the template."""
    json_ = db.to_json()
    head = {key: json_[key] for key in _HEAD_KEYS}
    return (dumps(head).decode()[:-1] + ',"behind_s":').replace("%", "%%")


def _tail(db: DatabaseStatus) -> str:
    """``,"healthy":...,"last_errors":[...]}``, with any ``%`` doubled."""
    json_ = db.to_json()
    tail = dumps({key: json_[key] for key in _TAIL_KEYS}).decode()[1:]
    return ("," + tail).replace("%", "%%")


def _number(value: float | None) -> str:
    """As json.dumps writes it."""
    return json.dumps(value)
