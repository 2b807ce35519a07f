"""Prometheus metrics: ours, from the status snapshot, and Litestream's own.

Rendered from memory (the status snapshot, the durable-sync counters, and the last
background scrape of Litestream's ``/metrics``), never by asking a process per scrape.
Every worker tells the truth about the database, as the status route does: a standby's
snapshot is the leader's, and it scrapes the leader's Litestream.

Litestream's series are passed through under their own names (``litestream_*``); its
Go runtime and process series (``go_*``, ``process_*``) are left out, so that they never
clash with the app's own in a shared registry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._litestream.scrape import MetricsWriter, format_labels, format_value
from .._primary.database_health import DatabaseStatus
from .._primary.group_sync import SYNC_BUCKETS, SyncStats
from .._primary.status import StatusSnapshot
from .._state import Role, State
from .view import ServiceView


def service_metrics(service: ServiceView) -> str:
    """The metrics of one running service, as the metrics route serves them."""
    facts = service.facts()
    return render_metrics(service.status(), sync=facts.sync_stats,
                          sync_rounds=facts.sync_rounds,
                          flush_seconds=facts.last_flush_seconds,
                          litestream=facts.litestream_metrics)


def render_metrics(status: StatusSnapshot, *, sync: SyncStats, sync_rounds: int,
                   flush_seconds: float | None, litestream: str) -> str:
    """The Prometheus text exposition (version 0.0.4) of one service; ``litestream``
    is Litestream's own series, already filtered (LitestreamScrape.text)."""
    return MetricsBody().render(status, sync=sync, sync_rounds=sync_rounds,
                                flush_seconds=flush_seconds, litestream=litestream).decode()


class MetricsBody:
    """The metrics route's body for successive snapshots: the per-database families
    (thousands of lines at a thousand databases) re-rendered only when their values
    changed, Litestream's series encoded once per scrape, the few others every time."""

    def __init__(self) -> None:
        self._databases: tuple[DatabaseStatus, ...] | None = None
        self._name = ""
        self._labels: dict[str, str] = {}  # per database path: its labels, formatted
        self._families: list[tuple[tuple[Any, ...], bytes]] = [
            ((), b"") for _ in _DATABASE_SERIES]
        self._litestream: tuple[str, bytes] = ("", b"")

    def render(self, status: StatusSnapshot, *, sync: SyncStats, sync_rounds: int,
               flush_seconds: float | None, litestream: str) -> bytes:
        """What render_metrics() returns, encoded."""
        name = {"name": status.name}
        out = MetricsWriter()
        out.family("asgi_litestream_up", "gauge", "1 while the databases are being replicated.",
                   [(name, status.running)])
        out.family("asgi_litestream_state", "gauge", "The supervisor's state (one-hot).",
                   [({**name, "state": s.value}, status.state is s) for s in State])
        out.family("asgi_litestream_role", "gauge", "This worker's role (one-hot).",
                   [({**name, "role": r.value}, status.role is r) for r in Role])
        out.family("asgi_litestream_restarts_total", "counter",
                   "Automatic restarts of Litestream since startup.", [(name, status.restarts)])
        out.family("asgi_litestream_last_exit_code", "gauge",
                   "Litestream's last exit code (negative: a signal).",
                   [(name, status.last_exit_code)])
        head = out.lines
        out = MetricsWriter()
        _service_families(out, name, status, sync=sync, sync_rounds=sync_rounds,
                          flush_seconds=flush_seconds)
        if litestream is not self._litestream[0]:
            self._litestream = (litestream, litestream.encode())
        blocks = ["\n".join(head).encode(), *self._database_families(status),
                  "\n".join(out.lines).encode(), self._litestream[1]]
        return b"\n".join(block for block in blocks if block) + b"\n"

    def _database_families(self, status: StatusSnapshot) -> list[bytes]:
        """Each family of _DATABASE_SERIES, encoded (b"" when it has no sample)."""
        databases = status.databases
        if databases is not self._databases:
            self._databases = databases
            labels = self._labels if status.name == self._name else {}
            self._name = status.name
            self._labels = {path: labels.get(path) or format_labels(
                {"name": status.name, "db": path}) for path in (d.path for d in databases)}
            shown = [self._labels[d.path] for d in databases]
            for index, (metric, read, kind, help_text) in enumerate(_DATABASE_SERIES):
                key = (shown, [read(d) for d in databases])
                if key != self._families[index][0]:
                    lines = [f"{metric}{label} {format_value(value)}"
                             for label, value in zip(shown, key[1], strict=True)
                             if value is not None]
                    block = "\n".join([f"# HELP {metric} {help_text}",
                                       f"# TYPE {metric} {kind}", *lines]) if lines else ""
                    self._families[index] = (key, block.encode())
        return [block for _, block in self._families]


def _service_families(out: MetricsWriter, name: dict[str, Any], status: StatusSnapshot, *,
                      sync: SyncStats, sync_rounds: int, flush_seconds: float | None) -> None:
    """The families after the databases': flush, durable waits, lease, verification."""
    out.family("asgi_litestream_final_flush_ok", "gauge",
               "Whether the last flush (stop or shutdown) reached every replica.",
               [(name, status.last_flush_ok)])
    out.family("asgi_litestream_final_flush_seconds", "gauge",
               "How long the last flush took.", [(name, flush_seconds)])
    out.family("asgi_litestream_durable_sync_rounds_total", "counter",
               "Syncs sent by group commit (far fewer than callers under load).",
               [(name, sync_rounds)])
    out.family("asgi_litestream_durable_sync_failures_total", "counter",
               "Durable waits that failed (Litestream down, or the replica too slow).",
               [(name, sync.failures)])
    _histogram(out, name, sync)
    lease = status.lease
    if lease is not None:  # lease=True: one writer across hosts
        out.family("asgi_litestream_lease_held", "gauge",
                   "1 while this app holds the replica's lease.",
                   [(name, lease.role == "holder")])
        out.family("asgi_litestream_lease_fenced", "gauge",
                   "1 while fenced: the lease could have been lost, nothing replicates.",
                   [(name, lease.role == "fenced")])
        out.family("asgi_litestream_lease_generation", "gauge",
                   "Generation of the lease held.", [(name, lease.generation)])
        out.family("asgi_litestream_lease_expires_in_seconds", "gauge",
                   "Seconds until the lease (ours, or the holder's) expires.",
                   [(name, lease.expires_in_s)])
    credentials = status.credentials
    if credentials is not None:
        out.family("asgi_litestream_credentials_rejected", "gauge",
                   "1 while the replica refuses the S3 keys in use (see the status's "
                   "credentials).", [(name, credentials.rejected)])
        out.family("asgi_litestream_credentials_rejected_since_seconds", "gauge",
                   "Unix time the replica began refusing the S3 keys in use.",
                   [(name, _unix(credentials.rejected_since))])
        out.family("asgi_litestream_credentials_loaded_seconds", "gauge",
                   "Unix time the S3 keys in use were loaded (a rotation sets it).",
                   [(name, _unix(credentials.loaded_at))])
        out.family("asgi_litestream_credentials_rotations_total", "counter",
                   "Rotations of the S3 keys since startup (each restarts Litestream once; "
                   "not counted in restarts).", [(name, credentials.rotations)])
        out.family("asgi_litestream_credentials_last_rotation_pause_seconds", "gauge",
                   "The last rotation's pause in replication: flush to running again.",
                   [(name, credentials.last_pause_s)])
    verification = status.verification
    out.family("asgi_litestream_verification_ok", "gauge",
               "Whether the last verification of the backup passed.",
               [(name, None if verification is None else verification.ok)])
    out.family("asgi_litestream_verification_age_seconds", "gauge",
               "Seconds since the last verification began.",
               [(name, None if verification is None else verification.age_s)])
    out.family("asgi_litestream_verification_duration_seconds", "gauge",
               "How long the last verification took.",
               [(name, None if verification is None else verification.duration_s)])


_DATABASE_SERIES: tuple[tuple[str, Callable[[DatabaseStatus], Any], str, str], ...] = (
    ("asgi_litestream_txid", lambda d: d.txid, "gauge",
     "Local position (Litestream transaction id)."),
    ("asgi_litestream_replicated_txid", lambda d: d.replicated_txid, "gauge",
     "Position the replica holds."),
    ("asgi_litestream_lag", lambda d: d.lag, "gauge",
     "Litestream transactions the replica misses."),
    ("asgi_litestream_delay_seconds", lambda d: d.behind_s, "gauge",
     "Replication delay: age of the oldest change the replica misses."),
    ("asgi_litestream_healthy", lambda d: d.healthy, "gauge",
     "1 healthy, 0 not (absent while unknown)."),
)


def _histogram(out: MetricsWriter, name: dict[str, Any], sync: SyncStats) -> None:
    metric = "asgi_litestream_durable_sync_seconds"
    out.lines += [f"# HELP {metric} How long durable waits took.",
                  f"# TYPE {metric} histogram"]
    for bound, count in zip(SYNC_BUCKETS, sync.buckets, strict=True):
        le = format_labels({**name, "le": format_value(bound)})
        out.lines.append(f"{metric}_bucket{le} {count}")
    out.lines += [f"{metric}_bucket{format_labels({**name, 'le': '+Inf'})} {sync.callers}",
                  f"{metric}_sum{format_labels(name)} {format_value(sync.latency_sum)}",
                  f"{metric}_count{format_labels(name)} {sync.callers}"]


def _unix(iso: str | None) -> float | None:
    """An ISO 8601 time of the status (``...Z``) as unix seconds; None for none."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
