"""The election (_primary/election.py) and what the leader publishes (LeaderInfo): the
role, the leader followed, the control socket to ask; no Litestream needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._litestream.control import ControlClient
from asgi_litestream._locks.leader_info import LeaderInfo, LeaseStatus
from asgi_litestream._locks.workers import Leadership
from asgi_litestream._primary.election import Election
from asgi_litestream._state import Role, State


def databases(tmp_path: Path) -> tuple[Database, ...]:
    return (Database(path=tmp_path / "app.db", replica_url=f"file://{tmp_path}/replica"),)


def test_leader_info_round_trips_every_field() -> None:
    """What the leader writes is what a standby reads, field for field."""
    info = LeaderInfo(pid=41, state=State.RUNNING, socket="/run/x.sock", litestream_pid=42,
                      restarts=3, last_exit_code=-9, version="0.5.17", name="orders",
                      metrics_addr="127.0.0.1:9", verification={"ok": True, "at": "x"},
                      lease=LeaseStatus(role="holder", holder="h:1", generation=2,
                                        expires_at="2026-01-01T00:00:00+00:00",
                                        expires_in_s=9.5, ttl_s=30.0),
                      lease_owner="h:1", boot_id="b")
    assert LeaderInfo.from_json(info.encode()) == info


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", '"running"', b"\xff\xfe"])
def test_a_file_mid_write_or_garbled_is_no_news(text: str | bytes) -> None:
    """Not a JSON object: None (ask again), never an exception into a request."""
    assert LeaderInfo.from_json(text) is None


def test_an_older_or_odd_file_reads_with_defaults() -> None:
    """Missing keys, wrong types, an unknown state, a lease without a role: defaults."""
    info = LeaderInfo.from_json('{"pid": true, "state": "dancing", "restarts": "3", '
                                '"socket": 7, "lease": {"generation": 2}, '
                                '"verification": [1], "litestream_pid": 12}')
    assert info == LeaderInfo(pid=None, litestream_pid=12)
    assert LeaderInfo.from_json('{"pid": 5, "state": "stopped"}') == LeaderInfo(
        pid=5, state=State.STOPPED)


def test_the_lease_is_inherited_only_on_the_same_kernel() -> None:
    """lease_heir: the owner when the boot ids match, else nobody."""
    info = LeaderInfo(pid=1, lease_owner="host:1", boot_id="boot-a")
    assert info.lease_heir("boot-a") == "host:1"
    assert info.lease_heir("boot-b") is None
    assert info.lease_heir(None) is None
    assert LeaderInfo(pid=1, boot_id="boot-a").lease_heir("boot-a") is None


def test_leading_makes_this_worker_the_leader(tmp_path: Path) -> None:
    """lead(): role leader, this pid, our own control socket."""
    own = ControlClient(tmp_path / "own.sock")
    election = Election(Leadership(databases(tmp_path)), own)
    assert election.role is None and election.leader.pid is None
    election.lead()
    assert election.role is Role.LEADER and election.leader.pid == os.getpid()
    assert election.control() is own


@pytest.mark.anyio
async def test_no_leader_published_or_not_running_is_not_found(tmp_path: Path) -> None:
    """Nothing published, or a leader that is not running: not found, no role taken."""
    leader = Leadership(databases(tmp_path))
    election = Election(Leadership(databases(tmp_path)), ControlClient(tmp_path / "own.sock"))
    assert not await election.find_leader()
    assert leader.try_lead()
    leader.publish(LeaderInfo(pid=1, state=State.STARTING, socket=str(tmp_path / "l.sock")))
    assert not await election.find_leader()
    assert election.role is None
    await election.aclose()
    leader.resign()


@pytest.mark.anyio
async def test_a_running_leader_whose_socket_does_not_answer_is_followed_not_trusted(
    tmp_path: Path,
) -> None:
    """A published running leader: stand by and ask its socket; silent, leader_ok stays
    False; a new leader's socket gets a new client."""
    leader = Leadership(databases(tmp_path))
    assert leader.try_lead()
    leader.publish(LeaderInfo(pid=1, state=State.RUNNING, socket=str(tmp_path / "a.sock"),
                              litestream_pid=7))
    own = ControlClient(tmp_path / "own.sock")
    election = Election(Leadership(databases(tmp_path)), own)
    try:
        assert not await election.find_leader()
        assert election.role is Role.STANDBY and election.leader.litestream_pid == 7
        assert not election.leader_ok
        first = election.control()
        assert first is not None and first is not own
        assert first.socket_path == tmp_path / "a.sock"
        assert election.control() is first  # the same leader: the same client
        leader.publish(LeaderInfo(pid=2, state=State.RUNNING,
                                  socket=str(tmp_path / "b.sock")))
        assert election.leader_running()
        second = election.control()
        assert second is not None and second.socket_path == tmp_path / "b.sock"
        leader.publish(LeaderInfo(pid=2, state=State.STOPPING))
        assert not election.leader_running() and not election.leader_ok
    finally:
        await election.aclose()
        leader.resign()
