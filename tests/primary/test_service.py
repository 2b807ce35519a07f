"""ReplicationService's life without Litestream: the states before a spawn, close()
cutting a wait short, the shutdown limit, and what the status shows meanwhile."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from asgi_litestream._config.settings import Settings
from asgi_litestream._exceptions import StartupError
from asgi_litestream._locks.lease import encode
from asgi_litestream._locks.workers import Leadership
from asgi_litestream._primary.handover import shutdown_limit
from asgi_litestream._primary.service import ReplicationService
from asgi_litestream._state import Role, State


def settings(tmp_path: Path, **options: object) -> Settings:
    return Settings.from_options(database=str(tmp_path / "app.db"),
                                 replica_url=f"file://{tmp_path}/replica",
                                 bin_path=str(tmp_path / "no-litestream"), **options)


def held_elsewhere(tmp_path: Path) -> None:
    """Another host holds the replica's lease for an hour."""
    replica = tmp_path / "replica"
    replica.mkdir(exist_ok=True)
    (replica / "lock.json").write_bytes(encode(
        7, datetime.now(timezone.utc) + timedelta(hours=1), "other-host:1"))


def test_the_shutdown_limit_covers_every_step_and_grows_with_the_work(tmp_path: Path) -> None:
    """Finite; more databases and a lease each raise it; never below one flush."""
    config = settings(tmp_path)
    one = shutdown_limit(config, databases=1, lease=False)
    assert one >= config.flush_timeout + config.stop_timeout + config.startup_timeout
    assert shutdown_limit(config, databases=10, lease=False) > one
    assert shutdown_limit(config, databases=1, lease=True) >= one + config.lease_ttl
    assert shutdown_limit(config, databases=0, lease=False) == one


@pytest.mark.anyio
async def test_close_cuts_a_wait_for_the_lease_short(tmp_path: Path) -> None:
    """With the lease held elsewhere: started at once, waiting_for_lease, leading, not
    running; close() returns promptly, the app's wait raises, the locks are free again,
    and no Litestream was ever started."""
    held_elsewhere(tmp_path)
    config = settings(tmp_path, lease=True)
    service = ReplicationService(config, binary=tmp_path / "no-litestream",
                                 workdir=tmp_path, environ=os.environ)
    async with anyio.create_task_group() as task_group:
        with anyio.fail_after(10):
            await task_group.start(service.serve)
            while service.lease is None or service.lease.seen is None:
                await anyio.sleep(0.01)
        assert service.role is Role.LEADER and not service.running and not service.placed()
        status = service.status()
        assert status.state is State.WAITING_FOR_LEASE and status.running is False
        assert status.lease is not None and status.lease.role == "waiting"
        assert status.lease.holder == "other-host:1"
        assert status.to_json()["lease"]["holder"] == "other-host:1"
        began = time.monotonic()
        with anyio.fail_after(10):
            await service.close()
        assert time.monotonic() - began < 5
    assert service.state is State.STOPPED and service.keeper.child is None
    with pytest.raises(StartupError, match="before its databases were in place"):
        await service.wait_in_place()
    assert Leadership(config.databases).try_lead()  # given back
    assert b"other-host:1" in (tmp_path / "replica" / "lock.json").read_bytes()  # theirs


@pytest.mark.anyio
async def test_a_startup_error_is_raised_plain_and_frees_the_locks(tmp_path: Path) -> None:
    """Without a lease, a leader that cannot start (no such binary) raises StartupError
    from serve() before "started", and gives the locks back."""
    (tmp_path / "app.db").write_bytes(b"")
    config = settings(tmp_path, startup_timeout=2)
    service = ReplicationService(config, binary=tmp_path / "no-litestream",
                                 workdir=tmp_path, environ=os.environ)
    async with anyio.create_task_group() as task_group:
        with anyio.fail_after(10), pytest.raises(StartupError, match="during startup"):
            await task_group.start(service.serve)
    assert service.state in (State.FAILED, State.STOPPED)
    assert Leadership(config.databases).try_lead()
    with pytest.raises(StartupError):
        await service.wait_in_place()
