"""Keys rotated on a standby worker reach the Litestream it starts when it takes over
(a rotate call reaches only the worker it runs in; key files reach every worker). Two
services on one database in this process stand for two workers: the flock that elects
the leader is per open file, as between processes. Real Litestream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import lifespan, notes_app

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]


def environ_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
    return dict(item.split("=", 1) for item in text.split("\0") if "=" in item)


async def held(app: LitestreamLifespan, states: list[dict[str, Any]], started: anyio.Event,
               release: anyio.Event) -> None:
    """``app``'s lifespan, from start until ``release``: each worker ends on its own."""
    async with lifespan(app) as state:
        states.append(state)
        started.set()
        await release.wait()


async def test_a_standby_that_took_the_call_leads_with_the_new_keys(
        tmp_path: Path, litestream_bin: Path) -> None:
    """rotate_credentials on the standby restarts nothing; once the leader is gone,
    the standby's Litestream runs with the keys it was given."""
    db = tmp_path / "app.db"

    def worker(name: str) -> LitestreamLifespan:
        return LitestreamLifespan(notes_app(db), database=db, name=name,
                                  replica_url=f"file://{tmp_path}/replica",
                                  bin_path=litestream_bin, access_key_id="AKIA-OLD",
                                  secret_access_key="sec-old")

    states: list[dict[str, Any]] = []
    releases = [anyio.Event(), anyio.Event()]
    async with anyio.create_task_group() as task_group:
        for name, release in zip(("first", "second"), releases, strict=True):
            started = anyio.Event()
            task_group.start_soon(held, worker(name), states, started, release)
            await started.wait()
        leader, standby = (state["litestream"] for state in states)
        assert (leader.role.value, standby.role.value) == ("leader", "standby")
        leader_pid = leader.pid
        await standby.rotate_credentials(access_key_id="AKIA-NEW", secret_access_key="sec-new")
        assert standby.pid is None and leader.pid == leader_pid  # nothing restarted
        assert environ_of(leader_pid)["LITESTREAM_ACCESS_KEY_ID"] == "AKIA-OLD"
        releases[0].set()  # the leading worker stops
        with anyio.fail_after(20):
            while standby.pid is None:
                await anyio.sleep(0.05)
        child = environ_of(standby.pid)
        assert standby.role.value == "leader"
        assert (child["LITESTREAM_ACCESS_KEY_ID"], child["LITESTREAM_SECRET_ACCESS_KEY"]) == (
            "AKIA-NEW", "sec-new")
        assert standby.status()["credentials"]["source"] == "call"
        releases[1].set()
