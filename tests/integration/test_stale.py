"""A stale file never replaces a newer replica (issue 20), with the real binary on a
file replica, moto and s3rver: a host that starts on an old copy of the database (a
stale volume, a hand restore), with or without Litestream's history beside it, sets
it aside and restores the replica's, and its app's own startup (a SQLAlchemy engine
with a pool, tables created at startup) runs on the restored file."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, LifespanFailed, client, lifespan, restore
from tests.integration.engine_server import engine_app
from tests.integration.servers import Server, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def write(app: Any, state: dict[str, Any], rows: list[str]) -> list[str]:
    """Write ``rows`` durably, several at a time (writes flowing); the rows now there."""
    async with client(app, state) as http:
        async def one(row: str) -> None:
            assert (await http.post("/notes", json={"body": row})).status_code == 201

        for start in range(0, len(rows), 5):
            async with anyio.create_task_group() as group:
                for row in rows[start:start + 5]:
                    group.start_soon(one, row)
        return list((await http.get("/notes")).json())


def copy_database(source: Path, target: Path, *, with_history: bool) -> None:
    target.mkdir(exist_ok=True)
    # One consistent file, WAL folded in (Litestream's read transaction holds back
    # checkpoints, so the main file alone would miss the latest rows).
    with sqlite3.connect(source / "app.db") as live, sqlite3.connect(target / "app.db") as copy:
        live.backup(copy)
    live.close()
    copy.close()
    history = source / ".app.db-litestream"
    if with_history and history.exists():
        shutil.copytree(history, target / ".app.db-litestream")


def replicas(request: pytest.FixtureRequest, tmp_path: Path, kind: str
             ) -> tuple[str, dict[str, str] | None, dict[str, Any]]:
    """The replica URL, the environment to restore it with, the middleware's options."""
    if kind == "file":
        return f"file://{tmp_path}/replica", None, {}
    s3: S3 = request.getfixturevalue("s3" if kind == "moto" else "s3rver")
    return s3.url(), s3.env(), {"access_key_id": s3.access_key_id,
                                "secret_access_key": s3.secret_access_key}


@pytest.mark.anyio
@pytest.mark.parametrize("with_history", [True, False], ids=["with-history", "bare-file"])
@pytest.mark.parametrize("kind", ["file", "moto", "s3rver"])
async def test_a_stale_copy_is_set_aside_and_the_replica_restored(
    request: pytest.FixtureRequest, tmp_path: Path, litestream_bin: Path, kind: str,
    with_history: bool,
) -> None:
    """Host B started on A's copy of 20 rows, after A wrote 100: B's app starts on all
    100 rows, B's new rows follow them in the replica, and the stale copy is kept."""
    url, env, keys = replicas(request, tmp_path, kind)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    seen: list[int] = []
    app_a = LitestreamLifespan(engine_app(a / "app.db", seen), database=a / "app.db",
                               replica_url=url, bin_path=litestream_bin,
                               restore_timeout=20, **keys)
    first = [f"a{i}" for i in range(20)]
    rest = [f"a{i}" for i in range(20, 100)]
    async with lifespan(app_a) as state:
        await write(app_a, state, first)
        copy_database(a, b, with_history=with_history)
        await write(app_a, state, rest)

    app_b = LitestreamLifespan(engine_app(b / "app.db", seen), database=b / "app.db",
                               replica_url=url, bin_path=litestream_bin,
                               restore_timeout=20, **keys)
    async with lifespan(app_b) as state:
        rows = await write(app_b, state, [f"b{i}" for i in range(5)])
    assert seen == [0, 100]  # B's own startup saw the restored file, not the stale one
    assert rows == first + rest + [f"b{i}" for i in range(5)]
    restored = restore(litestream_bin, url, tmp_path / "check.db", env)
    assert restored == rows
    (aside,) = [p for p in b.glob("app.db.behind-*") if not p.name.endswith(("-wal", "-shm"))]
    with sqlite3.connect(aside) as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")] == first
    conn.close()


@pytest.mark.anyio
async def test_if_behind_fail_refuses_to_start_and_names_both_positions(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """With if_behind='fail', a stale file stops startup with a StartupError that
    names the file and both positions; the file is left as it was."""
    url = f"file://{tmp_path}/replica"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    app_a = LitestreamLifespan(engine_app(a / "app.db", []), database=a / "app.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_a) as state:
        await write(app_a, state, ["one"])
        copy_database(a, b, with_history=True)
        await write(app_a, state, ["two", "three"])
    before = (b / "app.db").read_bytes()
    app_b = LitestreamLifespan(engine_app(b / "app.db", []), database=b / "app.db",
                               replica_url=url, bin_path=litestream_bin, if_behind="fail")
    with pytest.raises(LifespanFailed) as failed:
        async with lifespan(app_b):
            pass
    message = str(failed.value)
    assert "is behind its replica" in message and str(b / "app.db") in message
    assert "txid" in message and "if_behind" in message
    assert (b / "app.db").read_bytes() == before
    assert not list(b.glob("app.db.behind-*"))


@pytest.mark.anyio
async def test_a_file_in_step_with_its_replica_is_kept(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A restart on the file that wrote the replica keeps it: nothing is set aside."""
    url = f"file://{tmp_path}/replica"
    app = LitestreamLifespan(engine_app(tmp_path / "app.db", []),
                             database=tmp_path / "app.db", replica_url=url,
                             bin_path=litestream_bin)
    for batch in (["one"], ["two"]):
        async with lifespan(app) as state:
            await write(app, state, batch)
    assert not list(tmp_path.glob("app.db.behind-*"))
    assert "behind its replica" not in caplog.text


@pytest.mark.anyio
async def test_a_diverged_file_is_set_aside(tmp_path: Path, litestream_bin: Path) -> None:
    """Two hosts that both wrote from one copy: the one that comes back with more
    transactions than the replica, but another history, does not replicate over it."""
    url = f"file://{tmp_path}/replica"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    side = tmp_path / "side-replica"
    app_a = LitestreamLifespan(engine_app(a / "app.db", []), database=a / "app.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_a) as state:
        await write(app_a, state, ["shared"])
        copy_database(a, b, with_history=True)
        await write(app_a, state, ["a1"])
    # B writes more than A did, replicated elsewhere: its history runs past A's head.
    app_b = LitestreamLifespan(engine_app(b / "app.db", []), database=b / "app.db",
                               replica_url=f"file://{side}", bin_path=litestream_bin)
    async with lifespan(app_b) as state:
        for row in ("b1", "b2", "b3", "b4"):
            await write(app_b, state, [row])
    app_b = LitestreamLifespan(engine_app(b / "app.db", []), database=b / "app.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_b) as state:
        rows = await write(app_b, state, ["b5"])
    assert rows == ["shared", "a1", "b5"]
    assert restore(litestream_bin, url, tmp_path / "check.db") == rows


@pytest.mark.anyio
async def test_a_folder_member_behind_its_replica_is_restored(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """A folder's databases get the same check, from one listing of the replica."""
    url = f"file://{tmp_path}/replica"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    app_a = LitestreamLifespan(engine_app(a / "t1.db", []), database=f"{a}/*.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_a) as state:
        async with client(app_a, state) as http:
            assert (await http.post("/notes", json={"body": "one"})).status_code in (201, 503)
        await state["litestream"].sync(database=a / "t1.db", timeout=10)
        with sqlite3.connect(a / "t1.db") as live, sqlite3.connect(b / "t1.db") as copy:
            live.backup(copy)
        live.close()
        copy.close()
        async with client(app_a, state) as http:
            await http.post("/notes", json={"body": "two"})
        await state["litestream"].sync(database=a / "t1.db", timeout=10)
    app_b = LitestreamLifespan(engine_app(b / "t1.db", []), database=f"{b}/*.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_b) as state, client(app_b, state) as http:
        assert (await http.get("/notes")).json() == ["one", "two"]
    assert [p.name for p in b.glob("t1.db.behind-*")]


def lease_host(tmp_path: Path, name: str, s3: S3) -> Server:
    """One "host" under uvicorn: its own folder, the shared replica, the lease on, and
    an app that creates its table and counts its rows in its own startup."""
    folder = tmp_path / name
    folder.mkdir()
    env = {"ASGI_LITESTREAM_DATABASE": str(folder / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": s3.url(), "ASGI_LITESTREAM_LEASE": "1",
           "ASGI_LITESTREAM_LEASE_TTL": "6", "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.5",
           "ASGI_LITESTREAM_RESTORE_TIMEOUT": "30", "AWS_EC2_METADATA_DISABLED": "true",
           "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
           "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}
    return start_server("uvicorn", folder, env, wait=False,
                        app="tests.integration.engine_server:app")


def post(server: Server, body: str) -> int:
    return httpx.post(server.base + "/notes", json={"body": body}, timeout=20,
                      headers={"connection": "close"}).status_code


def until(server: Server, path: str, code: int, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = server.get(path)
            if response.status_code == code:
                return response
        except httpx.TransportError:
            pass
        assert server.process.poll() is None, server.output()
        time.sleep(0.05)
    raise AssertionError(f"{path} never answered {code}:\n{server.output()}")


def test_a_lease_handover_starts_the_new_hosts_app_on_every_row(
    tmp_path: Path, s3: S3, litestream_bin: Path,
) -> None:
    """B waits for the lease with its app not started (503 to every request); once A
    stops, B restores A's rows, then its own startup runs on them; no row is lost."""
    a = lease_host(tmp_path, "a", s3)
    b: Server | None = None
    try:
        until(a, "/_litestream/status", 200)
        acknowledged = []
        for i in range(40):
            assert post(a, f"a{i}") == 201
            acknowledged.append(f"a{i}")
        b = lease_host(tmp_path, "b", s3)
        waiting = until(b, "/_litestream/status", 503)
        assert waiting.json()["state"] == "waiting_for_lease"
        refused = b.get("/notes")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "app startup saw" not in b.output()  # B's app has not started
        for i in range(40, 60):
            assert post(a, f"a{i}") == 201
            acknowledged.append(f"a{i}")
        assert a.stop() == -signal.SIGTERM
        until(b, "/notes", 200)
        assert "app startup saw 60 rows" in b.output()
        for i in range(10):
            assert post(b, f"b{i}") == 201
            acknowledged.append(f"b{i}")
        assert b.get("/notes").json() == acknowledged
        assert b.stop() == -signal.SIGTERM
    finally:
        a.stop(signal.SIGKILL)
        if b is not None:
            b.stop(signal.SIGKILL)
    assert restore(litestream_bin, s3.url(), tmp_path / "check.db", s3.env()) == acknowledged


@pytest.mark.anyio
async def test_a_followers_app_starts_on_its_copy_and_its_pool_follows_a_fresh_copy(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """A follower's app reads the copy in its own startup (the copy is in place by
    then), and reads through its own pooled engine: after a fresh copy replaces the
    file, its pool is disposed and it sees the primary's new rows, not the old file."""
    import os

    url = f"file://{tmp_path}/replica"
    (tmp_path / "p").mkdir()
    (tmp_path / "f").mkdir()
    primary = LitestreamLifespan(engine_app(tmp_path / "p" / "app.db", []),
                                 database=tmp_path / "p" / "app.db", replica_url=url,
                                 bin_path=litestream_bin, sync_interval=0.1)
    copy = tmp_path / "f" / "copy.db"
    engine = create_engine(f"sqlite:///{copy}")
    seen: list[int] = []

    @asynccontextmanager
    async def startup(app: Starlette) -> AsyncIterator[None]:
        with engine.connect() as conn:
            seen.append(conn.execute(text("SELECT count(*) FROM notes")).scalar_one())
        yield

    async def count(request: Request) -> JSONResponse:
        with engine.connect() as conn:
            return JSONResponse(conn.execute(text("SELECT count(*) FROM notes")).scalar_one())

    follower = LitestreamLifespan(
        Starlette(routes=[Route("/count", count)], lifespan=startup), database=engine,
        replica_url=url, bin_path=litestream_bin, role="follower", sync_interval=0.1,
        health_interval=0.2, name="follower")
    async with lifespan(primary) as p_state:
        await write(primary, p_state, [f"n{i}" for i in range(10)])
        async with lifespan(follower) as f_state, client(follower, f_state) as http:
            with anyio.fail_after(30):
                while (response := await http.get("/count")).status_code == 503:
                    await anyio.sleep(0.05)
            assert seen == [10] and response.json() == 10
            replica = f_state["litestream"]
            generation = replica.status()["databases"][0]["generation"]
            with anyio.fail_after(60):
                while replica.status()["databases"][0]["generation"] == generation:
                    pid = replica.status()["databases"][0]["pid"]
                    if pid:  # without its saved position, it cannot resume: a fresh copy
                        Path(f"{copy}-txid").unlink(missing_ok=True)
                        os.kill(pid, 9)
                    await anyio.sleep(1.0)
            await write(primary, p_state, [f"m{i}" for i in range(5)])
            with anyio.fail_after(30):
                while (await http.get("/count")).json() != 15:
                    await anyio.sleep(0.1)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_follower_that_can_never_copy_says_so_at_once_and_its_app_never_starts(
    tmp_path: Path, s3: S3, litestream_bin: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """No such bucket on a follower's first copy: one error line within seconds, the
    app's own startup never runs on a missing copy, and its requests get 503."""
    started: list[bool] = []

    @asynccontextmanager
    async def startup(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    url = s3.url().replace(f"s3://{s3.bucket}/", f"s3://{s3.bucket}-gone/")
    follower = LitestreamLifespan(
        Starlette(routes=[Route("/notes", lambda r: JSONResponse([]))], lifespan=startup),
        database=tmp_path / "copy.db", replica_url=url, bin_path=litestream_bin,
        role="follower", access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key)
    began = time.monotonic()
    # The server was told "started" (behind the gate); it hears the failure as
    # lifespan.shutdown.failed, after the error line (and a SIGTERM, under a server).
    with pytest.raises(LifespanFailed, match=r"cannot follow .* the bucket does not exist"):
        async with lifespan(follower) as state, client(follower, state) as http:
            with anyio.fail_after(10):
                while "cannot follow" not in caplog.text:
                    await anyio.sleep(0.05)
            assert time.monotonic() - began < 10
            assert (await http.get("/notes")).status_code == 503
    assert started == []


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_shutdown_behind_the_gate_does_not_wait_for_the_replica(
    tmp_path: Path, litestream_bin: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a lease the server already serves while positions are read; a shutdown
    then ends at once, not after restore_timeout of retries."""
    import asgi_litestream._primary.guard as guard
    from asgi_litestream._litestream.positions import PositionError

    def unreadable(*args: Any, **kwargs: Any) -> None:
        raise PositionError("connection reset (simulated)")

    monkeypatch.setattr(guard, "find_stale", unreadable)
    app = LitestreamLifespan(engine_app(tmp_path / "app.db", []), database=tmp_path / "app.db",
                             replica_url=f"file://{tmp_path}/replica", bin_path=litestream_bin,
                             lease=True, restore_timeout=60)
    async with lifespan(app):
        with anyio.fail_after(10):
            while "(attempt 2)" not in caplog.text:  # retrying, behind the gate
                await anyio.sleep(0.05)
        began = time.monotonic()
    assert time.monotonic() - began < 5


@pytest.mark.anyio
async def test_a_standby_that_finds_the_file_stale_never_replicates_it_even_at_shutdown(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """A takeover under a running app that finds the file behind stays down, and the
    shutdown's final flush does not start Litestream on it: the replica keeps A's rows."""
    from asgi_litestream._config.settings import Settings
    from asgi_litestream._litestream.workdir import private_workdir, write_config
    from asgi_litestream._primary.handover import hand_over_and_stop
    from asgi_litestream._primary.service import ReplicationService

    url = f"file://{tmp_path}/replica"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    app_a = LitestreamLifespan(engine_app(a / "app.db", []), database=a / "app.db",
                               replica_url=url, bin_path=litestream_bin)
    async with lifespan(app_a) as state:
        await write(app_a, state, [f"a{i}" for i in range(5)])
        copy_database(a, b, with_history=False)
        await write(app_a, state, [f"a{i}" for i in range(5, 20)])
    settings = Settings.from_options(database=str(b / "app.db"), replica_url=url,
                                     bin_path=litestream_bin)
    workdir = private_workdir()
    write_config(settings, workdir)
    service = ReplicationService(settings, binary=litestream_bin, workdir=workdir.path,
                                 environ=os.environ)
    try:
        async with anyio.create_task_group() as group:
            service.keeper.attach(group)
            assert service.leadership.join() and service.leadership.try_lead()
            service.note_app_start()  # a standby whose app runs, taking over
            await service.joining.lead(takeover=True)
            assert service.state.value == "failed" and service.keeper.child is None
            await hand_over_and_stop(  # the server's shutdown
                role=service.role, keeper=service.keeper, leadership=service.leadership,
                lease=service.lease, settings=service.settings)
            assert service.keeper.child is None
            group.cancel_scope.cancel()
    finally:
        workdir.remove()
    assert len(restore(litestream_bin, url, tmp_path / "check.db")) == 20


@pytest.mark.anyio
async def test_an_s3_replica_whose_path_is_escaped_is_read_where_litestream_writes(
    tmp_path: Path, s3: S3, litestream_bin: Path,
) -> None:
    """Several databases on one base URL: a stem with a space is escaped in the URL
    (``x/my%20app``) and raw in the keys (``x/my app/0000/...``); its position is read
    there, so a stale copy of it is caught, not taken for a fresh replica."""
    from asgi_litestream._litestream.positions import replica_heads

    paths = [tmp_path / "my app.db", tmp_path / "other.db"]
    for path in paths:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.close()
    app = LitestreamLifespan(Starlette(), database=paths, replica_url=s3.url("x"),
                             bin_path=litestream_bin, access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key)
    async with lifespan(app) as state:
        with sqlite3.connect(paths[0]) as conn:
            conn.execute("INSERT INTO notes (body) VALUES ('one')")
        conn.close()
        replicated = await state["litestream"].sync(database=paths[0], timeout=10)
        settings = state["litestream"].settings
        db = next(d for d in settings.databases if d.path == paths[0])
        assert "%20" in db.replica_url
        head = replica_heads(db, settings.child_env(os.environ))[""]
    assert head.txid == replicated[str(paths[0])] > 0
