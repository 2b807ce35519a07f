"""Servers x frameworks, driven like a user: a real server on a free loopback port, the
real Litestream, real S3 servers (moto, and s3rver when Node.js is there).

Each cell proves the whole life: exactly one Litestream per database, every worker's
status route says running, a write followed at once by a graceful stop is in the
replica, and nothing is left behind (no Litestream, no private folder holding the
config file and the control socket)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgi_litestream import LitestreamLifespan
from tests.cli.test_cli import cli
from tests.helpers import (
    S3,
    client,
    descendants,
    lifespan,
    litestreams_replicating,
    notes_app,
    restore,
    survivors,
)
from tests.integration.servers import Server, start_server, statuses_of_all_workers

pytestmark = pytest.mark.integration

# id: (server, workers)
SERVERS = {
    "uvicorn-1": ("uvicorn", 1),
    "uvicorn-3": ("uvicorn", 3),
    "hypercorn-2": ("hypercorn", 2),
    "granian-2": ("granian", 2),
    "gunicorn-2": ("gunicorn", 2),
}
FRAMEWORKS = ["starlette", "fastapi", "litestar", "django"]


def app_env(db: Path, s3: S3, litestream_bin: Path, tmpdir: Path) -> dict[str, str]:
    """What the apps under tests/integration/apps read, plus a private TMPDIR so that
    the middleware's folder (config file, control socket) can be found afterwards."""
    return {
        "NOTES_DATABASE": str(db),
        "NOTES_REPLICA_URL": s3.url(),
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.2",
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
        "TMPDIR": str(tmpdir),
    }


def private_tmpdir(tmp_path: Path) -> Path:
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    # Past 100 bytes the middleware falls back to /tmp and we would look in vain.
    assert len(str(tmpdir / "als-12345678" / "ctl.sock")) <= 100, tmpdir
    return tmpdir


def left_behind(tmpdir: Path) -> list[str]:
    """The middleware's private folders (``als-*``, or ``.als-*`` while being made) and
    any config file or control socket still in ``tmpdir``."""
    return sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")
                  if p.name.lstrip(".").startswith("als-")
                  or p.name in ("ctl.sock", "litestream.yml"))


def stop(server: Server, sig: int) -> tuple[int, float]:
    """Signal the master; return its exit code and how long it took to exit."""
    sent = time.monotonic()
    server.process.send_signal(sig)
    code = server.process.wait(60)
    return code, time.monotonic() - sent


# -- servers x frameworks --------------------------------------------------------------


def app_target(framework: str) -> str:
    return f"tests.integration.apps.{framework}_app:" + (
        "application" if framework == "django" else "app")


def write_then_stop(server_id: str, framework: str, tmp_path: Path, litestream_bin: Path,
                    s3: S3, *, ctrl_c: bool = False) -> None:
    """The cell: serve, check, write, stop at once (SIGTERM to the master, or SIGINT to
    its whole process group as Ctrl+C in a terminal does), then check what is left."""
    kind, workers = SERVERS[server_id]
    db, tmpdir = tmp_path / "app.db", private_tmpdir(tmp_path)
    server = start_server(kind, tmp_path, app_env(db, s3, litestream_bin, tmpdir),
                          workers=workers, app=app_target(framework), session=ctrl_c)
    try:
        statuses = statuses_of_all_workers(server, workers)
        assert {s["status"] for s in statuses.values()} == {"running"}
        assert sorted(s["role"] for s in statuses.values()) == [
            "leader", *["standby"] * (workers - 1)]
        assert len({s["pid"] for s in statuses.values()}) == 1  # the one Litestream
        assert len(litestreams_replicating(db)) == 1
        assert list(tmpdir.glob("als-*/ctl.sock")), "the middleware did not use TMPDIR"
        family = descendants(server.process.pid)
        server.post_note("written just before the stop")
        sent = time.monotonic()
        if ctrl_c:
            os.killpg(server.process.pid, signal.SIGINT)
        else:
            server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(60)
        took = time.monotonic() - sent
        replicating_at_exit = litestreams_replicating(db)
    finally:
        server.stop(signal.SIGKILL)
    how = "Ctrl+C" if ctrl_c else "SIGTERM"
    print(f"{server_id} x {framework}: {how} → exit {code} in {took:.2f} s")  # noqa: T201
    # uvicorn with one process re-raises the signal once it has shut down (SIGINT then
    # ends as a KeyboardInterrupt that uvicorn's command line catches).
    assert code == (-signal.SIGTERM if server_id == "uvicorn-1" and not ctrl_c else 0), (
        server.output())
    assert server.output().count("final flush complete") == 1, server.output()
    assert replicating_at_exit == []  # stopped before the master exited, not after
    assert survivors(family) == []
    assert left_behind(tmpdir) == [], server.output()
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == [
        "written just before the stop"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("server_id", SERVERS)
def test_sigterm(server_id: str, framework: str, tmp_path: Path, litestream_bin: Path,
                 s3: S3) -> None:
    """One Litestream, every worker running; a write then at once SIGTERM to the
    master: the replica has the row and nothing is left behind."""
    write_then_stop(server_id, framework, tmp_path, litestream_bin, s3)


@pytest.mark.parametrize("server_id", SERVERS)
def test_ctrl_c(server_id: str, tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """Ctrl+C in a terminal (SIGINT to the server's process group) right after a
    write: the replica has the row and nothing is left behind."""
    write_then_stop(server_id, "starlette", tmp_path, litestream_bin, s3, ctrl_c=True)


# -- gunicorn and SIGINT -------------------------------------------------------------------
# gunicorn treats SIGINT (and SIGQUIT) to its master as a quick shutdown: it sends its
# workers SIGQUIT, waits up to --graceful-timeout, then SIGKILLs them. UvicornWorker
# (uvicorn-worker 0.4.0) only marks itself "not alive" on SIGQUIT and keeps serving, so
# no lifespan shutdown runs. In a terminal, Ctrl+C signals the whole process group: each
# worker gets SIGINT itself, which uvicorn handles as a graceful shutdown (test_ctrl_c).


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_gunicorn_quick_shutdown_of_the_master_alone_skips_the_flush(
    sig: int, tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """SIGINT or SIGQUIT to gunicorn's master alone: the workers are SIGKILLed at
    --graceful-timeout, so no final flush runs; Litestream still exits (parent-death
    signal). Stop gunicorn with SIGTERM instead."""
    db = tmp_path / "app.db"
    server = start_server("gunicorn", tmp_path,
                          app_env(db, s3, litestream_bin, private_tmpdir(tmp_path)),
                          workers=2, app=app_target("starlette"),
                          args=("--graceful-timeout", "2"))
    try:
        statuses_of_all_workers(server, 2)
        family = descendants(server.process.pid)
        server.post_note("not flushed")
        code, took = stop(server, sig)
    finally:
        server.stop(signal.SIGKILL)
    print(f"gunicorn-2 x starlette: {signal.Signals(sig).name} to the master → "  # noqa: T201
          f"exit {code} in {took:.2f} s")
    assert code == 0, server.output()
    assert server.output().count("was sent SIGKILL") == 2, server.output()
    assert "final flush" not in server.output()
    assert survivors(family) == []
    assert litestreams_replicating(db) == []


# -- in-process --------------------------------------------------------------------------


def create_app(framework: str, db: Path, s3: S3) -> Any:
    """The framework's app, built in this process."""
    module = importlib.import_module(f"tests.integration.apps.{framework}_app")
    return module.create_app(str(db), s3.url())


@pytest.fixture
def in_process(tmp_path: Path, litestream_bin: Path, s3: S3,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings the apps take from the environment, and a private temporary folder;
    afterwards, nothing may be left in it."""
    tmpdir = private_tmpdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    for name, value in app_env(tmp_path / "app.db", s3, litestream_bin, tmpdir).items():
        monkeypatch.setenv(name, value)
    # Litestar configures the root logger when an app is built: undo it for the tests
    # that follow.
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        yield tmpdir
    finally:
        for handler in set(logging.root.handlers) - set(handlers):
            logging.root.removeHandler(handler)
            handler.close()
        logging.root.setLevel(level)
    assert left_behind(tmpdir) == []


@pytest.mark.anyio
@pytest.mark.parametrize("framework", ["starlette", "fastapi", "litestar"])
async def test_lifespan_manager(framework: str, tmp_path: Path, litestream_bin: Path, s3: S3,
                                in_process: Path) -> None:
    """asgi-lifespan's LifespanManager with httpx.ASGITransport: running while inside,
    the row in the replica after, nothing left behind."""
    from asgi_lifespan import LifespanManager

    db = tmp_path / "app.db"
    app = create_app(framework, db, s3)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            status = await http.get("/_litestream/status")
            assert status.status_code == 200
            assert status.json()["status"] == "running"
            assert len(litestreams_replicating(db)) == 1
            assert list(in_process.glob("als-*/ctl.sock"))
            assert (await http.post("/notes", json={"body": "in process"})).status_code == 201
        leaving = time.monotonic()
    print(f"LifespanManager x {framework}: shutdown in "  # noqa: T201
          f"{time.monotonic() - leaving:.2f} s")
    assert litestreams_replicating(db) == []
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == [
        "in process"]


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_starlette_test_client(framework: str, tmp_path: Path, litestream_bin: Path, s3: S3,
                               in_process: Path) -> None:
    """Starlette's TestClient as a context manager runs the lifespan: running inside,
    the row in the replica after, nothing left behind."""
    from starlette.testclient import TestClient

    db = tmp_path / "app.db"
    with TestClient(create_app(framework, db, s3)) as http:
        status = http.get("/_litestream/status")
        assert status.status_code == 200
        assert status.json()["status"] == "running"
        assert len(litestreams_replicating(db)) == 1
        assert list(in_process.glob("als-*/ctl.sock"))
        assert http.post("/notes", json={"body": "in process"}).status_code == 201
        leaving = time.monotonic()
    print(f"TestClient x {framework}: shutdown in "  # noqa: T201
          f"{time.monotonic() - leaving:.2f} s")
    assert litestreams_replicating(db) == []
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == [
        "in process"]


# -- two S3 implementations --------------------------------------------------------------


@pytest.fixture(params=["moto", "s3rver"])
def any_s3(request: pytest.FixtureRequest) -> S3:
    """A fresh bucket on moto, then on s3rver."""
    return request.getfixturevalue("s3" if request.param == "moto" else "s3rver")


def s3_app(db: Path, s3: S3, litestream_bin: Path) -> LitestreamLifespan:
    return LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                              bin_path=litestream_bin, access_key_id=s3.access_key_id,
                              secret_access_key=s3.secret_access_key)


@pytest.mark.anyio
async def test_durable_write_is_in_the_replica(tmp_path: Path, litestream_bin: Path,
                                               any_s3: S3) -> None:
    """A durable write is in the replica when it is acknowledged, before any shutdown."""
    db = tmp_path / "app.db"
    app = s3_app(db, any_s3, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        response = await http.post("/notes/durable", json={"body": "durable"})
        assert response.status_code == 201, response.text
        assert list(response.json()["replicated"]) == [str(db)]
        assert restore(litestream_bin, any_s3.url(), tmp_path / "out.db",
                       env=any_s3.env()) == ["durable"]


def remove_database(db: Path) -> None:
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()


@pytest.mark.anyio
async def test_missing_database_is_restored_on_boot(tmp_path: Path, litestream_bin: Path,
                                                    any_s3: S3) -> None:
    """Rows replicated, the database deleted: the next startup restores them."""
    db = tmp_path / "app.db"
    app = s3_app(db, any_s3, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        for body in ("one", "two"):
            assert (await http.post("/notes", json={"body": body})).status_code == 201
    remove_database(db)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.get("/notes")).json() == ["one", "two"]


@pytest.mark.anyio
async def test_cli_restores_the_database(tmp_path: Path, litestream_bin: Path,
                                         any_s3: S3) -> None:
    """`asgi-litestream restore` brings a deleted database back from the replica."""
    db = tmp_path / "app.db"
    app = s3_app(db, any_s3, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes", json={"body": "cli"})).status_code == 201
    remove_database(db)
    result = cli("restore", "--database", str(db), "--replica-url", any_s3.url(),
                 env={"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
                      "LITESTREAM_ACCESS_KEY_ID": any_s3.access_key_id,
                      "LITESTREAM_SECRET_ACCESS_KEY": any_s3.secret_access_key})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"restored {db} from ")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM notes")] == ["cli"]
