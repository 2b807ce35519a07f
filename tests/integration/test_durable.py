"""Durable acknowledgement: an acknowledged write is in the replica, even if the
machine dies right after. Real Litestream, real S3 (moto)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, client, descendants, is_litestream, lifespan, notes_app, restore
from tests.integration.servers import start_server
from tests.proxy import Proxy

pytestmark = [pytest.mark.integration]


def kill_machine(server_pid: int) -> None:
    """No graceful anything: SIGKILL Litestream first (so it cannot sync on the way
    out), then the app."""
    for pid in descendants(server_pid):
        if is_litestream(pid):
            os.kill(pid, signal.SIGKILL)
    os.kill(server_pid, signal.SIGKILL)


@pytest.mark.parametrize("route", ["/notes/durable", "/notes"])
def test_acknowledged_rows_survive_sudden_death_only_when_durable(
    route: str, tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Write 20 rows, then SIGKILL Litestream and the app at once: through the durable
    route every acknowledged row is in the replica; through the plain route the last
    ones are lost (so this test can fail)."""
    db = tmp_path / "app.db"
    env = {
        "ASGI_LITESTREAM_DATABASE": str(db),
        "ASGI_LITESTREAM_REPLICA_URL": s3.url(),
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        # A long interval makes the plain route's loss certain, and shows the durable
        # route does not depend on it.
        "ASGI_LITESTREAM_SYNC_INTERVAL": "10",
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
    }
    server = start_server("uvicorn", tmp_path, env)
    acknowledged = []
    try:
        with httpx.Client(base_url=server.base, timeout=15) as http:
            for i in range(20):
                response = http.post(route, json={"body": f"row-{i}"})
                assert response.status_code == 201, response.text
                acknowledged.append(f"row-{i}")
    finally:
        kill_machine(server.process.pid)
        server.process.wait(10)
    restored = restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env())
    if route == "/notes/durable":
        assert restored == acknowledged
    else:
        assert restored != acknowledged, "the plain route lost nothing: the test proves nothing"


@pytest.mark.anyio
async def test_durable_write_fails_within_its_timeout_when_s3_is_cut(
    tmp_path: Path, litestream_bin: Path, s3: S3,
    s3_behind_proxy: tuple[S3, Proxy],
) -> None:
    """S3 refused: a durable request answers 503 within its timeout; plain requests
    keep working; once S3 is back durable requests succeed again."""
    via_proxy, proxy = s3_behind_proxy
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=via_proxy.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             flush_timeout=30)
    async with lifespan(app) as state, client(app, state) as http:
        ok = await http.post("/notes/durable", json={"body": "first"})
        assert ok.status_code == 201
        proxy.set_mode("refuse")
        started = time.monotonic()
        failed = await http.post("/notes/durable?timeout=2", json={"body": "cut"})
        elapsed = time.monotonic() - started
        assert failed.status_code == 503
        assert "not durable" in failed.text
        assert failed.headers["retry-after"] == "1"
        assert 1.9 < elapsed < 4
        assert (await http.post("/notes", json={"body": "plain"})).status_code == 201
        proxy.set_mode("pass")
        with anyio.fail_after(60):
            while (await http.post("/notes/durable?timeout=5",
                                   json={"body": "again"})).status_code != 201:
                pass


@pytest.mark.anyio
async def test_group_commit_shares_syncs_and_releases_nobody_early(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """64 concurrent durable writes: far fewer syncs than requests, and every
    acknowledged row is already in the replica when the last one returns."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=f"file://{replica}",
                             bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        before = supervisor.sync_rounds
        acknowledged: list[str] = []

        async def write(i: int) -> None:
            response = await http.post("/notes/durable", json={"body": f"row-{i}"})
            assert response.status_code == 201
            acknowledged.append(f"row-{i}")

        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(write, i)
        syncs = supervisor.sync_rounds - before
        os.kill(supervisor.pid, signal.SIGKILL)  # what is acknowledged is already there
        restored = restore(litestream_bin, f"file://{replica}", tmp_path / "out.db")
    print(f"64 durable writes, {syncs} syncs")  # noqa: T201
    assert 1 <= syncs <= 16, syncs
    assert sorted(restored) == sorted(acknowledged)
    assert len(restored) == 64


@pytest.mark.anyio
async def test_durable_writes_succeed_under_a_stream_of_other_commits(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Commits landing during a sync must not fail a durable request: Litestream then
    reports the replica one transaction short, and the wait must look past that."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        done = threading.Event()

        def background_writes() -> None:
            # Another connection committing all the time, as other workers would.
            with sqlite3.connect(db, timeout=5) as conn:
                while not done.is_set():
                    with conn:
                        conn.execute("INSERT INTO notes (body) VALUES ('noise')")
                    time.sleep(0.001)

        async def durable_write(i: int) -> None:
            response = await http.post("/notes/durable", json={"body": f"d-{i}"})
            assert response.status_code == 201, response.text

        await http.post("/notes", json={"body": "creates the table"})
        writer = threading.Thread(target=background_writes)
        writer.start()
        try:
            for round_ in range(10):
                async with anyio.create_task_group() as burst:
                    for i in range(16):
                        burst.start_soon(durable_write, round_ * 16 + i)
        finally:
            done.set()
            writer.join()
