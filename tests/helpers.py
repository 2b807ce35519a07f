"""Test helpers: drive the ASGI lifespan by hand, a small notes app, restore."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_litestream import durable, position_header
from asgi_litestream._locks.leader_info import CredentialsStatus, LeaseStatus
from asgi_litestream._primary.database_health import DatabaseStatus
from asgi_litestream._primary.status import StatusSnapshot, VerificationStatus
from asgi_litestream._state import Role, State

# One /proc walk and one free-port finder for the tests and the benchmarks (re-exported).
from bench._common import free_port as free_port
from bench._proc import descendants as descendants
from bench._proc import is_litestream as is_litestream


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def url(self, path: str = "app") -> str:
        return f"s3://{self.bucket}/{path}?endpoint={self.endpoint}&region=us-east-1"

    def create_bucket(self) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id=self.access_key_id,
                     aws_secret_access_key=self.secret_access_key,
                     ).create_bucket(Bucket=self.bucket)

    def env(self) -> dict[str, str]:
        """Environment for a `litestream restore` of this bucket."""
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(LITESTREAM_ACCESS_KEY_ID=self.access_key_id,
                   LITESTREAM_SECRET_ACCESS_KEY=self.secret_access_key)
        return env



def litestream_children() -> list[int]:
    """Pids of live (or unreaped) `litestream` children of this process."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # a worker thread that just ended
        for pid in children:
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"litestream"):
                found.append(int(pid))
    return found


class LifespanFailed(Exception):
    def __init__(self, message: str, error: BaseException | None) -> None:
        super().__init__(message)
        self.message = message
        self.error = error


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s lifespan like a server does; yield the lifespan state.

    A startup.failed reply raises LifespanFailed carrying the app's exception.
    """
    to_app, app_inbox = anyio.create_memory_object_stream[Message](10)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](10)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "state": {}}
    errors: list[BaseException] = []
    finished = anyio.Event()

    async def run() -> None:
        try:
            await app(scope, app_inbox.receive, app_outbox.send)
        except Exception as exc:
            errors.append(exc)
        finally:
            finished.set()

    failed: LifespanFailed | None = None
    async with anyio.create_task_group() as tg, to_app, from_app, app_inbox, app_outbox:
        tg.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] == "lifespan.startup.failed":
            await finished.wait()
            failed = LifespanFailed(reply.get("message", ""), errors[0] if errors else None)
        else:
            assert reply["type"] == "lifespan.startup.complete", reply
            yield scope["state"]
            await to_app.send({"type": "lifespan.shutdown"})
            reply = await from_app.receive()
            await finished.wait()
            if reply["type"] == "lifespan.shutdown.failed":
                failed = LifespanFailed(reply.get("message", ""), errors[0] if errors else None)
            else:
                assert reply["type"] == "lifespan.shutdown.complete", (reply, errors)
    if failed is not None:
        raise failed


def with_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """Give http scopes the lifespan state, as a server does (ASGITransport doesn't)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return wrapped


def client(app: ASGIApp, state: dict[str, Any] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=with_state(app, state or {}))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def notes_app(db: Path) -> Starlette:
    """A tiny app that writes and lists rows in ``db``."""

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, timeout=5)
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        return conn

    async def create(request: Request) -> JSONResponse:
        body = (await request.json())["body"]
        with connect() as conn:
            row = conn.execute("INSERT INTO notes (body) VALUES (?)", (body,)).lastrowid
        return JSONResponse({"id": row, "worker": os.getpid()}, status_code=201)

    async def create_durably(request: Request) -> JSONResponse:
        body = (await request.json())["body"]
        with connect() as conn:
            row = conn.execute("INSERT INTO notes (body) VALUES (?)", (body,)).lastrowid
        timeout = float(request.query_params.get("timeout", 10))
        replicated = await durable(request, timeout=timeout)
        position = position_header(replicated, name=request.state.litestream.name)
        return JSONResponse({"id": row, "worker": os.getpid(), "replicated": replicated,
                             "position": position}, status_code=201)

    async def listing(request: Request) -> JSONResponse:
        with connect() as conn:
            rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
        return JSONResponse([r[0] for r in rows])

    async def whoami(request: Request) -> JSONResponse:
        supervisor = request.state.litestream
        return JSONResponse({"name": supervisor.settings.name, "pid": supervisor.pid,
                             "worker": os.getpid()})

    return Starlette(routes=[Route("/notes", create, methods=["POST"]),
                             Route("/notes/durable", create_durably, methods=["POST"]),
                             Route("/notes", listing, methods=["GET"]),
                             Route("/whoami", whoami)])


def file_app(tmp_path: Path, litestream_bin: Path, **options: Any) -> ASGIApp:
    """The notes app on ``tmp_path/app.db`` behind LitestreamLifespan, replicating to
    ``tmp_path/replica``."""
    from asgi_litestream import LitestreamLifespan

    db = tmp_path / "app.db"
    return LitestreamLifespan(notes_app(db), database=db,
                              replica_url=f"file://{tmp_path}/replica",
                              bin_path=litestream_bin, **options)


def restore(litestream_bin: Path, replica_url: str, out: Path,
            env: dict[str, str] | None = None) -> list[str]:
    """`litestream restore` the replica into ``out``; return its notes."""
    env = env or {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    result = subprocess.run([str(litestream_bin), "restore", "-o", str(out), replica_url],
                            env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "no matching backup" in result.stderr:
        return []  # the replica holds nothing at all
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def survivors(pids: list[int], within: float = 5.0) -> list[str]:
    """Of ``pids``, the command lines of those still alive after ``within`` seconds.
    (Some leave a moment after their parent: multiprocessing's resource tracker exits
    when the server's master closes its pipe.)"""
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid in pids if is_alive(pid)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    found = []
    for pid in alive:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        found.append(f"{pid}: " + " ".join(a.decode(errors="replace") for a in argv if a))
    return found


def litestreams_replicating(database: Path) -> list[int]:
    """Every live `litestream replicate` on the machine whose config names ``database``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not is_litestream(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            config = Path(argv[argv.index(b"-config") + 1].decode()).read_text()
        except (OSError, ValueError, IndexError):
            continue
        if str(database) in config:
            found.append(int(entry.name))
    return found


def status_snapshot(data: dict[str, Any]) -> StatusSnapshot:
    """A status snapshot record from (part of) the status route's JSON: what the page
    and the metrics render, written as the route shows it. Absent keys read as unknown."""
    found = data.get("verification")
    verification = None if not found else VerificationStatus(
        ok=found.get("ok"), duration_s=found.get("duration_s"), reason=found.get("reason"),
        age_s=found.get("age_s"), published=found)
    return StatusSnapshot(
        name=data["name"], running=data.get("status") == "running",
        state=State(data.get("state", "running")),
        role=Role(data["role"]) if data.get("role") else None,
        leader_pid=data.get("leader_pid"), worker_pid=data.get("worker_pid", os.getpid()),
        healthy=data.get("healthy"), pid=data.get("pid"), uptime_s=data.get("uptime_s"),
        restarts=data.get("restarts", 0), last_exit_code=data.get("last_exit_code"),
        last_errors=tuple(data.get("last_errors") or ()),
        last_flush_ok=data.get("last_flush_ok"), version=data.get("version"),
        verification=verification, lease=LeaseStatus.from_json(data.get("lease")),
        credentials=CredentialsStatus.from_json(data.get("credentials")),
        databases=tuple(DatabaseStatus(**{"replica": "", **db, "last_errors": tuple(
            db.get("last_errors") or ())}) for db in data.get("databases") or ()))
