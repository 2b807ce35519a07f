"""Replica outages and repeated crashes, against the real Litestream and moto."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, client, lifespan, notes_app, restore
from tests.proxy import Proxy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def wait_status(http, predicate, timeout: float, what: str) -> dict:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout):
        while True:
            response = await http.get("/_litestream/status")
            body = response.json()
            if predicate(body):
                return dict(body)
            await anyio.sleep(0.05)
    raise AssertionError(what)


@pytest.mark.parametrize("outage", ["refuse", "hang"])
async def test_replica_outage_is_unhealthy_then_healthy_and_loses_nothing(
    outage: str, tmp_path: Path, litestream_bin: Path, s3: S3,
    s3_behind_proxy: tuple[S3, Proxy],
) -> None:
    """S3 cut off mid-run (refused or hung): the app keeps serving, status turns
    unhealthy, behind by more than max_lag (still 200 for readiness, 503 with
    ?strict=1), then healthy once S3 is back; after shutdown the replica has every
    row."""
    via_proxy, proxy = s3_behind_proxy
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=via_proxy.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             health_interval=0.2, max_lag=1.0, flush_timeout=30,
                             public_details=True)
    written: list[str] = []
    async with lifespan(app) as state, client(app, state) as http:
        async def write(body: str) -> None:
            assert (await http.post("/notes", json={"body": body})).status_code == 201
            written.append(body)

        await write("before")
        await wait_status(http, lambda b: b["healthy"], 10, "healthy at first")

        proxy.set_mode(outage)  # type: ignore[arg-type]
        for i in range(5):
            await write(f"during-{i}")
        down = await wait_status(http, lambda b: not b["healthy"], 20, "unhealthy")
        assert down["status"] == "running"
        assert (await http.get("/_litestream/status")).status_code == 200
        assert (await http.get("/_litestream/status?strict=1")).status_code == 503
        database = down["databases"][0]
        assert database["behind_s"] >= 1.0 or database["error"], database

        proxy.set_mode("pass")
        await wait_status(http, lambda b: b["healthy"], 60, "healthy again")
        await write("after")
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written


async def test_chaos_many_kills_during_writes_lose_no_committed_row(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """SIGKILL Litestream again and again while rows are written: every restart is
    counted and the replica ends up with every committed row."""
    db = tmp_path / "app.db"
    kills = 12
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             max_restarts=kills + 1, restart_window=600, max_backoff=0.5)
    written: list[str] = []
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        stop_writing = anyio.Event()

        async def writer() -> None:
            while not stop_writing.is_set():
                body = f"row-{len(written)}"
                response = await http.post("/notes", json={"body": body})
                assert response.status_code == 201
                written.append(body)
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            for kill in range(kills):
                with anyio.fail_after(10):
                    while not supervisor.running:
                        await anyio.sleep(0.005)
                await anyio.sleep(0.15)
                os.kill(supervisor.pid, signal.SIGKILL)
                killed = time.monotonic()
                with anyio.fail_after(10):
                    while supervisor.restarts <= kill or not supervisor.running:
                        await anyio.sleep(0.002)
                print(f"kill {kill}: back in {(time.monotonic() - killed) * 1000:.0f} ms")  # noqa: T201
            await anyio.sleep(0.3)
            stop_writing.set()
        assert supervisor.restarts == kills
        assert (await http.get("/_litestream/status")).json()["restarts"] == kills
    assert len(written) > 50
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written
