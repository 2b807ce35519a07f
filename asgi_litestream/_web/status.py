"""The status snapshot: what the status route serves, built from memory only.

Vocabulary: the *status route* (``/_litestream/status``) serves the *status snapshot*
(:func:`snapshot`); each database's part of it is its *health* (_primary/health.py).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._primary.health import overall_health
from .._state import Role

if TYPE_CHECKING:
    from .._primary.service import ReplicationService


def snapshot_key(service: ReplicationService) -> tuple[object, ...]:
    """Changes whenever snapshot() would: state, positions, errors, and every 100 ms
    (uptime), so the status route can reuse its rendered body."""
    return (service.state, service.pid, service.keeper.restarts, service.role,
            service.lease.lease if service.lease else None,
            service.election.leader_ok, service.health.changes, service.log.changes,
            int(time.monotonic() * 10))


def snapshot(service: ReplicationService) -> dict[str, Any]:
    """The status snapshot (the status route's JSON)."""
    databases = service.health.snapshot(time.time(), service.log.errors_of,
                                        service.log.changes)
    keeper, running = service.keeper, service.running
    standby = service.role is Role.STANDBY
    leader = service.election.leader if standby else {}
    return {
        "name": service.settings.name,
        "status": "running" if running else "down",
        "state": service.state.value,
        "role": service.role.value if service.role else None,
        "leader_pid": service.election.leader.get("pid"),
        "worker_pid": os.getpid(),
        "healthy": overall_health([d["healthy"] for d in databases]) if running else False,
        "pid": leader.get("litestream_pid") if standby else service.pid,
        "uptime_s": round(time.monotonic() - keeper.child.started_at, 3)
                    if running and keeper.child is not None else None,
        "restarts": leader.get("restarts", 0) if standby else keeper.restarts,
        "last_exit_code": leader.get("last_exit_code") if standby else keeper.last_exit_code,
        "last_errors": list(service.log.last_errors),
        "last_flush_ok": keeper.last_flush_ok,
        "version": leader.get("version") if standby else keeper.version,
        "verification": _verification(leader.get("verification") if standby else (
            service.verifier.last.to_json() if service.verifier.last else None)),
        "lease": leader.get("lease") if standby else (
            service.lease.to_json() if service.lease else None),
        "databases": databases,
    }


def _verification(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last verification, with its age."""
    if not found:
        return None
    began = datetime.fromisoformat(found["at"].replace("Z", "+00:00"))
    age = (datetime.now(timezone.utc) - began).total_seconds()
    return {**found, "age_s": round(age, 1)}
