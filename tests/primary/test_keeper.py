"""The keeper's state machine: start, crash, restart with backoff, give up, stop with a
flush, closing. Driven by a small fake Litestream written into a temporary folder (it
answers the control socket as Litestream does), then once with the real binary."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from asgi_litestream._config.settings import Settings
from asgi_litestream._litestream.commands import replicate_command
from asgi_litestream._litestream.control import ControlClient
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._litestream.workdir import SOCKET_NAME, generated_config
from asgi_litestream._primary.keeper import Keeper
from asgi_litestream._state import State
from tests.helpers import restore

pytestmark = pytest.mark.anyio

# Each run reads its part from FAKE_RUNS (the last part repeats): "serve" until SIGTERM,
# "crash:S" exits with code 3 S seconds after it is ready, "fail" exits before that.
FAKE = """\
import http.server, json, os, signal, socketserver, sys, threading
sock, db, calls = sys.argv[1:4]
with open(calls, "a") as f:
    f.write(f"{os.getpid()}\\n")
with open(calls) as f:
    run = len(f.read().splitlines())
parts = os.environ["FAKE_RUNS"].split(",")
part = parts[min(run, len(parts)) - 1]
if part == "fail":
    print("Error: cannot open the replica", flush=True)
    sys.exit(1)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.startswith("/info"):
            self.reply({"pid": os.getpid(), "version": "0.5.17", "database_count": 1})
        else:
            self.reply({"databases": [{"path": db, "status": "replicating"}]})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply({"status": "ok", "txid": 3, "replicated_txid": 3})
    def address_string(self):
        return "unix"
    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.path.exists(sock):
    os.unlink(sock)
server = Server(sock, Handler)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
print('{"level":"INFO","msg":"replicating"}', flush=True)
if part.startswith("crash"):
    threading.Timer(float(part.split(":")[1]), lambda: os._exit(3)).start()
server.serve_forever()
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder whose socket path fits the unix limit (tmp_path's may not)."""
    with tempfile.TemporaryDirectory(prefix="keeper-") as name:
        yield Path(name)


def settings_for(tmp_path: Path, **changes: object) -> Settings:
    settings = Settings.from_options(database=str(tmp_path / "app.db"),
                                     replica_url=f"file://{tmp_path}/replica")
    defaults: dict[str, object] = {"max_restarts": 5, "restart_window": 60.0,
                                   "max_backoff": 0.05, "startup_timeout": 10.0,
                                   "stop_timeout": 2.0, "flush_timeout": 2.0}
    return dataclasses.replace(settings, **{**defaults, **changes})  # type: ignore[arg-type]


@asynccontextmanager
async def running_keeper(tmp_path: Path, short_dir: Path, runs: str, **changes: object
                         ) -> AsyncIterator[tuple[Keeper, list[State]]]:
    """A keeper of the fake, attached to a task group with keep_alive running; stopped
    and closed on the way out."""
    script = tmp_path / "fake_litestream.py"
    script.write_text(FAKE)
    settings = settings_for(tmp_path, **changes)
    socket = short_dir / "ctl.sock"
    control = ControlClient(socket)
    states: list[State] = []
    holder: list[Keeper] = []
    keeper = Keeper(settings, command=[sys.executable, str(script), str(socket),
                                       str(settings.databases[0].path), str(tmp_path / "calls")],
                    env={**os.environ, "FAKE_RUNS": runs}, control=control,
                    log=LitestreamLog([]), pass_fds=list, leading=lambda: True,
                    on_change=lambda: states.append(holder[0].state))
    holder.append(keeper)
    try:
        async with anyio.create_task_group() as task_group:
            keeper.attach(task_group)
            task_group.start_soon(keeper.keep_alive)
            try:
                yield keeper, states
            finally:
                keeper.begin_closing()
                await keeper.stop()
    finally:
        await control.aclose()


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def spawns(tmp_path: Path) -> int:
    calls = tmp_path / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


async def test_start_runs_it_and_stop_flushes_then_stops(tmp_path: Path,
                                                         short_dir: Path) -> None:
    """start(): running once the socket answers; stop(): the flush reached the replica,
    the child is reaped, stopped; start() again brings it back."""
    async with running_keeper(tmp_path, short_dir, "serve") as (keeper, states):
        await keeper.start()
        assert keeper.state is State.RUNNING and keeper.child is not None
        assert keeper.version == "0.5.17"
        child = keeper.child
        assert await keeper.stop() is True
        assert keeper.state is State.STOPPED and keeper.child is None
        assert child.returncode == 0 and keeper.last_flush_ok is True
        await keeper.start()
        assert keeper.state is State.RUNNING and spawns(tmp_path) == 2
    assert states[:4] == [State.STARTING, State.RUNNING, State.STOPPING, State.STOPPED]
    assert keeper.restarts == 0


async def test_a_crash_is_restarted_and_counted(tmp_path: Path, short_dir: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """An unasked exit: restarting (its code kept), then running again."""
    async with running_keeper(tmp_path, short_dir, "crash:0.2,serve") as (keeper, states):
        await keeper.start()
        await until(lambda: keeper.restarts == 1 and keeper.state is State.RUNNING)
        assert keeper.last_exit_code == 3 and spawns(tmp_path) == 2
    assert State.RESTARTING in states
    assert "exited unexpectedly with code 3" in caplog.text


async def test_a_failed_restart_is_one_more_exit_and_retried(
    tmp_path: Path, short_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A respawn that never becomes ready is logged, judged by the policy like a crash,
    and tried again after the backoff."""
    async with running_keeper(tmp_path, short_dir, "crash:0.2,fail,serve") as (keeper, _):
        await keeper.start()
        await until(lambda: keeper.restarts == 2 and keeper.state is State.RUNNING)
        assert spawns(tmp_path) == 3
    assert "restart failed" in caplog.text


async def test_too_many_exits_give_up_until_started_again(
    tmp_path: Path, short_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Past max_restarts within the window: failed, staying down, no more spawns;
    start() forgets the exits and runs it again."""
    async with running_keeper(tmp_path, short_dir, "crash:0.1,crash:0.1,crash:0.1,serve",
                              max_restarts=2) as (keeper, _):
        await keeper.start()
        await until(lambda: keeper.state is State.FAILED)
        await anyio.sleep(0.3)
        assert spawns(tmp_path) == 3 and keeper.restarts == 2
        assert keeper.want_running is False and keeper.child is None
        assert "staying down" in caplog.text
        await keeper.start()
        assert keeper.state is State.RUNNING and spawns(tmp_path) == 4


async def test_closing_ends_keep_alive_and_refuses_to_start(tmp_path: Path,
                                                           short_dir: Path) -> None:
    """begin_closing(): keep_alive returns, start() does nothing; `closing` reads it."""
    async with running_keeper(tmp_path, short_dir, "serve") as (keeper, _):
        assert keeper.closing is False
        keeper.begin_closing()
        assert keeper.closing is True
        await keeper.start()
        assert keeper.child is None and spawns(tmp_path) == 0


async def test_a_start_without_a_task_group_is_refused(tmp_path: Path) -> None:
    """The log pumps need the service's task group: attach() it first."""
    keeper = Keeper(settings_for(tmp_path), command=["true"], env={},
                    control=ControlClient(tmp_path / "s"), log=LitestreamLog([]),
                    pass_fds=list, leading=lambda: True, on_change=lambda: None)
    with pytest.raises(RuntimeError, match="attach"):
        await keeper.start()
    assert keeper.state is State.FAILED  # never left "starting"


async def test_the_real_litestream_is_restarted_after_a_kill_and_flushed_on_stop(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """With the real binary: killed from outside, it is restarted; stop() flushes a
    row committed meanwhile, and a restore of the replica holds it."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    settings = settings_for(tmp_path, startup_timeout=30.0, stop_timeout=10.0,
                            flush_timeout=10.0)
    db = settings.databases[0].path
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    with generated_config(settings) as (config, workdir):
        control = ControlClient(workdir.path / SOCKET_NAME)
        keeper = Keeper(settings, command=replicate_command(litestream_bin, config),
                        env=settings.child_env(os.environ), control=control,
                        log=LitestreamLog([]), pass_fds=list, leading=lambda: True,
                        on_change=lambda: None)
        try:
            async with anyio.create_task_group() as task_group:
                keeper.attach(task_group)
                task_group.start_soon(keeper.keep_alive)
                await keeper.start()
                assert keeper.child is not None
                first = keeper.child.pid
                os.kill(first, signal.SIGKILL)
                await until(lambda: keeper.restarts == 1 and keeper.state is State.RUNNING,
                            timeout=30)
                assert keeper.child is not None and keeper.child.pid != first
                assert keeper.last_exit_code == -signal.SIGKILL
                with sqlite3.connect(db) as conn:
                    conn.execute("INSERT INTO notes (body) VALUES ('after the restart')")
                conn.close()
                began = time.monotonic()
                keeper.begin_closing()
                assert await keeper.stop() is True
                assert time.monotonic() - began < 10
        finally:
            await control.aclose()
    assert keeper.state is State.STOPPED
    assert restore(litestream_bin, f"file://{tmp_path}/replica",
                   tmp_path / "restored.db") == ["after the restart"]
