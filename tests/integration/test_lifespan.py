"""LitestreamLifespan end to end, against the real Litestream and a real S3 server."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from starlette.applications import Starlette

import asgi_litestream
from asgi_litestream import BinaryNotFoundError, ConfigError, LitestreamLifespan, StartupError
from tests.helpers import (
    S3,
    LifespanFailed,
    client,
    lifespan,
    litestream_children,
    notes_app,
    restore,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def file_url(path: Path) -> str:
    return f"file://{path}"


async def write_notes(app: LitestreamLifespan, state: dict[str, object], *bodies: str) -> None:
    async with client(app, state) as http:
        for body in bodies:
            response = await http.post("/notes", json={"body": body})
            assert response.status_code == 201


async def test_rows_written_through_the_app_restore_from_a_file_replica(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """Rows written through the app come back from a file:// replica after shutdown."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=file_url(replica),
                             bin_path=litestream_bin)
    async with lifespan(app) as state:
        await write_notes(app, state, "one", "two", "three")
    assert restore(litestream_bin, file_url(replica), tmp_path / "out.db") == [
        "one", "two", "three"]


async def test_rows_written_through_the_app_restore_from_s3(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Rows written through the app come back from an S3 replica (moto) after shutdown."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=f"sqlite:///{db}", replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)
    async with lifespan(app) as state:
        await write_notes(app, state, "alpha", "beta")
        async with client(app, state) as http:
            assert (await http.get("/_litestream/status")).status_code == 200
    out = tmp_path / "out.db"
    assert restore(litestream_bin, s3.url(), out, env=s3.env()) == ["alpha", "beta"]


async def test_a_write_in_the_first_second_survives_shutdown(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """A commit right after startup, then shutdown at once: the replica still has it
    (a plain SIGTERM this early loses it)."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)
    started = time.monotonic()
    async with lifespan(app) as state:
        await write_notes(app, state, "early")
        assert time.monotonic() - started < 1.0
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == ["early"]


async def test_sigkilled_litestream_is_restarted_and_counted(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """SIGKILL of the child: it comes back, restarts == 1, the route answers 200 again,
    and rows written before and after the kill all reach the replica."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=file_url(replica),
                             bin_path=litestream_bin, public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        await write_notes(app, state, "before")
        first = (await http.get("/_litestream/status")).json()
        os.kill(first["pid"], signal.SIGKILL)
        with anyio.fail_after(5):
            while True:
                response = await http.get("/_litestream/status")
                if response.status_code == 200 and response.json()["pid"] != first["pid"]:
                    break
                await anyio.sleep(0.005)
        body = response.json()
        assert body["restarts"] == 1
        assert body["last_exit_code"] == -signal.SIGKILL
        assert body["pid"] in litestream_children()
        await write_notes(app, state, "after")
    assert restore(litestream_bin, file_url(replica), tmp_path / "out.db") == [
        "before", "after"]


async def test_start_stop_and_status_by_name(tmp_path: Path, litestream_bin: Path) -> None:
    """stop_litestream flushes and stops while the app serves; start brings it back."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=file_url(replica),
                             bin_path=litestream_bin, name="orders")
    assert asgi_litestream.status("orders") == "down"
    async with lifespan(app) as state, client(app, state) as http:
        assert asgi_litestream.status("orders") == "running"
        assert asgi_litestream.status() == "down"  # no supervisor named "litestream"
        await write_notes(app, state, "kept")
        assert await asgi_litestream.stop_litestream("orders") is True
        assert asgi_litestream.status("orders") == "down"
        assert litestream_children() == []
        stopped = await http.get("/_litestream/status")
        assert stopped.status_code == 503
        assert stopped.json()["state"] == "stopped"
        # The flush at stop put the row in the replica already.
        assert restore(litestream_bin, file_url(replica), tmp_path / "mid.db") == ["kept"]
        await write_notes(app, state, "while stopped")  # the app keeps serving
        await asgi_litestream.start_litestream("orders")
        await asgi_litestream.start_litestream("orders")  # a no-op when running
        assert asgi_litestream.status("orders") == "running"
        assert len(litestream_children()) == 1
        assert (await http.get("/_litestream/status")).json()["restarts"] == 0
        assert (await http.get("/whoami")).json()["name"] == "orders"
    assert asgi_litestream.status("orders") == "down"
    with pytest.raises(asgi_litestream.SupervisorLookupError, match="orders"):
        await asgi_litestream.stop_litestream("orders")
    assert restore(litestream_bin, file_url(replica), tmp_path / "out.db") == [
        "kept", "while stopped"]


async def test_status_route_reports_from_memory(tmp_path: Path, litestream_bin: Path) -> None:
    """GET and HEAD answer the status JSON; other methods get 405; other paths pass."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, public_details=True,
                             replica_url=file_url(tmp_path / "replica"), bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        response = await http.get("/_litestream/status")
        body = response.json()
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        for key in ("name", "status", "restarts", "pid", "uptime_s", "last_exit_code",
                    "version", "databases"):
            assert key in body
        assert body["status"] == "running"
        assert body["version"] == "0.5.17"
        assert body["databases"][0]["path"] == str(db)
        assert body["databases"][0]["replica"] == file_url(tmp_path / "replica")
        head = await http.head("/_litestream/status")
        assert head.status_code == 200 and head.content == b""
        assert (await http.post("/_litestream/status")).status_code == 405
        assert (await http.get("/notes")).json() == []


async def test_status_path_none_turns_the_route_off(tmp_path: Path, litestream_bin: Path) -> None:
    """status_path=None: the path reaches the inner app (404 here)."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, status_path=None,
                             replica_url=file_url(tmp_path / "replica"), bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.get("/_litestream/status")).status_code == 404


async def test_no_secret_in_status_logs_or_repr(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret key never appears in the status JSON, the logs or a repr."""
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             log_level="debug", public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        await write_notes(app, state, "x")
        status_text = (await http.get("/_litestream/status")).text
        supervisor = state["litestream"]
        reprs = repr(app) + repr(supervisor.settings) + repr(supervisor.settings.databases)
        config_text = supervisor.config_path.read_text()
        assert oct(supervisor.config_path.stat().st_mode & 0o777) == "0o600"
        assert oct(supervisor.config_path.parent.stat().st_mode & 0o777) == "0o700"
    assert "litestream[" in caplog.text  # Litestream's own lines were captured
    for text in (status_text, caplog.text, reprs, config_text):
        assert s3.secret_access_key not in text
        assert s3.access_key_id not in text


async def test_litestream_log_lines_keep_their_levels(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """Litestream's INFO and ERROR lines arrive in Python logging at those levels."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    db = tmp_path / "app.db"
    missing_bucket = S3(s3.endpoint, "no-such-bucket", s3.access_key_id, s3.secret_access_key)
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=missing_bucket.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             flush_timeout=1, stop_timeout=1, restore_if_missing=False)
    async with lifespan(app) as state:
        await write_notes(app, state, "x")
        with anyio.fail_after(10):
            while not any(r.levelno == logging.ERROR and "litestream[" in r.getMessage()
                          for r in caplog.records):
                await anyio.sleep(0.05)
    records = [r for r in caplog.records if "litestream[" in r.getMessage()]
    assert any(r.levelno == logging.INFO and "replicating to" in r.getMessage()
               for r in records)
    assert any((r.levelno == logging.ERROR and "no-such-bucket" in r.getMessage())
               or (r.levelno == logging.ERROR and "404" in r.getMessage()) for r in records)
    assert all(r.name == "asgi_litestream" for r in records)


async def test_an_app_without_lifespan_support_still_gets_litestream(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """An inner app that rejects lifespan (like Django's) is served and backed up."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    notes = notes_app(db)

    async def django_like(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await notes(scope, receive, send)

    app = LitestreamLifespan(django_like, database=db, replica_url=file_url(replica),
                             bin_path=litestream_bin)
    async with lifespan(app) as state:
        assert asgi_litestream.status() == "running"
        await write_notes(app, state, "django")
    assert restore(litestream_bin, file_url(replica), tmp_path / "out.db") == ["django"]


async def test_inner_startup_runs_after_litestream_is_ready_and_shutdown_before_flush(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """The onion: Litestream is running during the inner app's startup and shutdown;
    a row the inner app writes in its own shutdown still reaches the replica."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    seen: list[str] = []
    notes = notes_app(db)

    @asynccontextmanager
    async def inner_lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.append(asgi_litestream.status())
        yield
        seen.append(asgi_litestream.status())
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO notes (body) VALUES ('written at shutdown')")

    inner = Starlette(routes=notes.routes, lifespan=inner_lifespan)
    app = LitestreamLifespan(inner, database=db, replica_url=file_url(replica),
                             bin_path=litestream_bin)
    async with lifespan(app) as state:
        await write_notes(app, state, "served")
    assert seen == ["running", "running"]
    assert restore(litestream_bin, file_url(replica), tmp_path / "out.db") == [
        "served", "written at shutdown"]


async def test_inner_startup_failure_is_reported_and_litestream_stopped(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """If the inner app's startup fails, the server hears startup.failed and no
    Litestream is left running."""
    db = tmp_path / "app.db"

    @asynccontextmanager
    async def failing_lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("migration failed")
        yield

    inner = Starlette(lifespan=failing_lifespan)
    app = LitestreamLifespan(inner, database=db, replica_url=file_url(tmp_path / "r"),
                             bin_path=litestream_bin)
    with pytest.raises(LifespanFailed, match="migration failed"):
        async with lifespan(app):
            pass
    assert litestream_children() == []


async def test_litestream_startup_error_fails_the_lifespan_with_its_own_line(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """When Litestream exits at startup, startup.failed carries its error line and the
    inner app never starts."""
    started: list[bool] = []

    @asynccontextmanager
    async def inner_lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = LitestreamLifespan(Starlette(lifespan=inner_lifespan), database=tmp_path / "app.db",
                             replica_url="abs://container/app", bin_path=litestream_bin,
                             restore_if_missing=False)
    with pytest.raises(LifespanFailed, match="account name is required") as failure:
        async with lifespan(app):
            pass
    assert isinstance(failure.value.error, StartupError)
    assert started == []
    assert asgi_litestream.status() == "down"


@pytest.mark.parametrize(("options", "error", "option"), [
    ({"replica_url": "s3://bk/app"}, ConfigError, "replica_url"),
    ({"replica_url": "s3://[bucket/x"}, ConfigError, "replica_url"),
    ({"sync_interval": -1}, ConfigError, "sync_interval"),
    ({"name": "two words"}, ConfigError, "name"),
    ({"bin_path": "/no/such/litestream"}, BinaryNotFoundError, None),
])
async def test_bad_option_fails_startup_before_anything_is_spawned(
    tmp_path: Path, litestream_bin: Path, options: dict[str, object],
    error: type[Exception], option: str | None,
) -> None:
    """A bad option: startup.failed carrying a typed error that names the fix; the
    inner app never starts; no child process, no config file left."""
    started: list[bool] = []

    @asynccontextmanager
    async def inner_lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    kwargs: dict[str, object] = {"database": tmp_path / "app.db",
                                 "replica_url": file_url(tmp_path / "r"),
                                 "bin_path": litestream_bin, **options}
    app = LitestreamLifespan(Starlette(lifespan=inner_lifespan), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(LifespanFailed) as failure:
        async with lifespan(app):
            pass
    assert isinstance(failure.value.error, error)
    assert "Fix" in failure.value.message or "pip install" in failure.value.message
    if option:
        assert failure.value.message.startswith(option)
    assert started == []
    assert litestream_children() == []
    assert not (tmp_path / "app.db").exists()


async def test_too_many_crashes_stay_down_and_say_so(tmp_path: Path, litestream_bin: Path) -> None:
    """More exits than max_restarts: state failed, 503, the app keeps serving,
    stop_litestream reports that nothing was flushed, start brings it back."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=file_url(tmp_path / "r"),
                             bin_path=litestream_bin, max_restarts=0, public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        os.kill(supervisor.pid, signal.SIGKILL)
        with anyio.fail_after(5):
            while supervisor.state.value != "failed":
                await anyio.sleep(0.01)
        response = await http.get("/_litestream/status")
        assert response.status_code == 503
        assert response.json()["state"] == "failed"
        assert response.json()["last_exit_code"] == -signal.SIGKILL
        await write_notes(app, state, "still serving")
        assert await asgi_litestream.stop_litestream() is False
        await asgi_litestream.start_litestream()
        assert asgi_litestream.status() == "running"


async def test_inner_app_failing_at_shutdown_is_reported_as_failed(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """A raw ASGI app that raises during shutdown: the server hears shutdown.failed
    (after Litestream flushed and stopped), not shutdown.complete."""

    async def raw_app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("could not close the pool")

    app = LitestreamLifespan(raw_app, database=tmp_path / "app.db",
                             replica_url=file_url(tmp_path / "r"), bin_path=litestream_bin)
    with pytest.raises(LifespanFailed, match="could not close the pool") as failure:
        async with lifespan(app):
            assert asgi_litestream.status() == "running"
    assert isinstance(failure.value.error, RuntimeError)
    assert litestream_children() == []


@pytest.mark.anyio
@pytest.mark.parametrize("pragmas", [True, False])
async def test_an_engine_gets_the_safe_pragmas(
    pragmas: bool, tmp_path: Path, litestream_bin: Path
) -> None:
    """database=engine: its connections get busy_timeout 5000 and synchronous NORMAL
    (FULL, SQLite's default, with sqlite_pragmas=False); it replicates either way."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), database=engine,
                             replica_url=f"file://{tmp_path}/replica",
                             bin_path=litestream_bin, sqlite_pragmas=pragmas)
    async with lifespan(app) as state:
        with engine.connect() as conn:
            timeout = conn.execute(text("PRAGMA busy_timeout")).scalar()
            synchronous = conn.execute(text("PRAGMA synchronous")).scalar()
        assert state["litestream"].running
    engine.dispose()
    # Python's sqlite3 already waits 5 s (timeout=5.0): only synchronous differs.
    assert (timeout, synchronous) == ((5000, 1) if pragmas else (5000, 2))


@pytest.mark.anyio
async def test_an_async_engine_replicates_and_restores(tmp_path: Path, litestream_bin: Path
                                                       ) -> None:
    """database=AsyncEngine (sqlite+aiosqlite): rows written through it are in the
    replica after shutdown, and its connections got the pragmas."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), database=engine,
                             replica_url=f"file://{tmp_path}/replica", bin_path=litestream_bin)
    async with lifespan(app) as state:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
            await conn.execute(text("INSERT INTO notes (body) VALUES ('async')"))
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar()
        await state["litestream"].sync()
    await engine.dispose()
    assert synchronous == 1
    assert restore(litestream_bin, f"file://{tmp_path}/replica", tmp_path / "out.db") == [
        "async"]


@pytest.mark.anyio
async def test_a_sqlmodel_engine_replicates_and_restores(tmp_path: Path, litestream_bin: Path
                                                         ) -> None:
    """database=<SQLModel engine>: rows a SQLModel session commits are in the replica."""
    from sqlmodel import Field, Session, SQLModel, create_engine

    class Note(SQLModel, table=True):
        __tablename__ = "notes"
        id: int | None = Field(default=None, primary_key=True)
        body: str

    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), database=engine,
                             replica_url=f"file://{tmp_path}/replica", bin_path=litestream_bin)
    async with lifespan(app):
        SQLModel.metadata.create_all(engine, tables=[Note.__table__])  # type: ignore[list-item]
        with Session(engine) as session:
            session.add(Note(body="sqlmodel"))
            session.commit()
    engine.dispose()
    SQLModel.metadata.remove(Note.__table__)  # type: ignore[arg-type]
    assert restore(litestream_bin, f"file://{tmp_path}/replica", tmp_path / "out.db") == [
        "sqlmodel"]
