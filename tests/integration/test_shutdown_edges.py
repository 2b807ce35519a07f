"""Shutdown at awkward moments: Litestream down, stopped by the app, two verifications
at once, a leader file that cannot be written. Real Litestream, file replicas."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import pytest

import asgi_litestream
from asgi_litestream._config.databases import Database
from asgi_litestream._locks.leader_info import LeaderInfo
from asgi_litestream._locks.workers import Leadership
from asgi_litestream._state import State
from tests.helpers import client, file_app, lifespan, restore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]




async def test_litestream_down_at_shutdown_is_started_once_for_the_final_flush(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """max_restarts=0 and a SIGKILL: Litestream is down (failed) when the app stops;
    the row written meanwhile still reaches the replica."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    app = file_app(tmp_path, litestream_bin, max_restarts=0)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        assert (await http.post("/notes", json={"body": "before"})).status_code == 201
        os.kill(supervisor.pid, signal.SIGKILL)
        with anyio.fail_after(10):
            while supervisor.state.value != "failed":
                await anyio.sleep(0.02)
        assert (await http.post("/notes", json={"body": "while down"})).status_code == 201
    assert "starting it once for the final flush" in caplog.text
    assert "final flush complete" in caplog.text
    assert restore(litestream_bin, f"file://{tmp_path}/replica",
                   tmp_path / "out.db") == ["before", "while down"]


async def test_stopped_by_the_app_says_there_was_no_final_flush(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """stop_litestream() and no start again: the shutdown warns that rows written since
    are not in the replica, and never claims a complete final flush."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    app = file_app(tmp_path, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert await asgi_litestream.stop_litestream() is True
        caplog.clear()
        assert (await http.post("/notes", json={"body": "after stop"})).status_code == 201
    assert "no final flush: the app stopped Litestream" in caplog.text
    assert "final flush complete" not in caplog.text


async def test_two_verifications_at_once_both_pass(tmp_path: Path, litestream_bin: Path) -> None:
    """An app's verify() during a background one: both succeed (no shared side file)."""
    app = file_app(tmp_path, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes", json={"body": "one"})).status_code == 201
        results = []

        async def run() -> None:
            results.append(await state["litestream"].verify())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(run)
    assert [r.ok for r in results] == [True, True], [r.reason for r in results]


def test_a_leader_file_that_cannot_be_written_is_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """publish() on a file it cannot write logs one warning and carries on; resign()
    still closes the locks."""
    leadership = Leadership((Database(path=tmp_path / "app.db", replica_url="file:///r"),))
    assert leadership.try_lead()
    read_only = os.open(tmp_path / ".app.db.litestream-leader", os.O_RDONLY)
    leadership._leader_fds.append(read_only)
    leadership.publish(LeaderInfo(pid=os.getpid(), state=State.RUNNING))
    leadership.publish(LeaderInfo(pid=os.getpid(), state=State.STOPPING))
    leadership.resign()
    assert caplog.text.count("cannot update") == 1
    assert leadership.fds == []
    with pytest.raises(OSError):
        os.fstat(read_only)
