"""The lease's fence with the real Litestream: a slow renewal and then failures never
give two writers, a stalled event loop does not delay the kill, 40 busy sync endpoints
do not fence a healthy holder, and a lock.json that is not a lease never kills the
lease task. Run with -s for the measured times."""

from __future__ import annotations

import os
import select
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, State
from asgi_litestream._locks.lease import LeaseHeld, LeaseStoreError, decode
from asgi_litestream._locks.lease_stores import FileLeaseStore, S3LeaseStore, lease_store
from tests.helpers import S3, client, lifespan, notes_app

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(120)]


class Exit:
    """When a process exits, seen from a thread through a pidfd (which never reaps it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.at: float | None = None  # monotonic
        self._fd = os.pidfd_open(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        while not self._stop.is_set():
            if select.select([self._fd], [], [], 0.01)[0]:
                self.at = time.monotonic()
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._fd)


@pytest.fixture
def exits() -> Iterator[list[Exit]]:
    found: list[Exit] = []
    yield found
    for each in found:
        each.close()


def monotonic_of(when: datetime) -> float:
    return time.monotonic() + (when - datetime.now(timezone.utc)).total_seconds()


async def until(predicate: Any, timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def serving(http: httpx.AsyncClient, path: str) -> None:
    """Until the app answers ``path`` (with a lease, it starts once the lease is ours)."""
    with anyio.fail_after(30):
        while (await http.get(path)).status_code != 200:
            await anyio.sleep(0.02)


async def test_a_slow_renewal_then_failures_never_give_two_writers(
    tmp_path: Path, litestream_bin: Path, s3: S3, monkeypatch: pytest.MonkeyPatch,
    exits: list[Exit],
) -> None:
    """Host A's renewal PUT takes 2.5 s and succeeds, then A cannot reach S3: A's
    Litestream is gone before host B takes the lease (ttl 6 s)."""
    ttl = 6.0
    slow_next, cut = threading.Event(), threading.Event()
    real_put = S3LeaseStore._put

    def put(self: S3LeaseStore, data: bytes, etag: str | None) -> str:
        if self.owner == "host-b:1":
            return real_put(self, data, etag)
        if cut.is_set():
            raise LeaseStoreError("cut off by the test")
        if slow_next.is_set():  # stamped before the request, as always; it lands late
            slow_next.clear()
            time.sleep(2.5)
            answer = real_put(self, data, etag)
            cut.set()
            return answer
        return real_put(self, data, etag)

    monkeypatch.setattr(S3LeaseStore, "_put", put)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             lease=True, lease_ttl=ttl)
    b = lease_store(s3.url(), s3.env(), owner="host-b:1")
    b_won: list[float] = []  # monotonic, before B's successful acquire

    def host_b() -> None:
        while not b_won:
            started = time.monotonic()
            try:
                b.acquire(ttl)
            except (LeaseHeld, LeaseStoreError):
                time.sleep(0.02)
                continue
            b_won.append(started)

    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        await until(lambda: supervisor.state is State.RUNNING, 30, "A replicating")
        a = Exit(supervisor.pid)
        exits.append(a)
        await serving(http, "/notes")
        assert (await http.post("/notes/durable", json={"body": "a-1"})).status_code == 201
        slow_next.set()
        b_thread = threading.Thread(target=host_b, daemon=True)
        b_thread.start()
        await until(lambda: b_won, 30, "B takes the lease")
        b_thread.join()
        await until(lambda: supervisor.state is State.FENCED, 10, "A fenced")
        await until(lambda: a.at is not None, 5, "A's Litestream gone")
    assert a.at is not None
    overlap = a.at - b_won[0]
    print(f"\nA's Litestream died {-overlap:.2f}s before B took the lease"  # noqa: T201
          if overlap < 0 else f"\nTWO WRITERS for {overlap:.2f}s")
    assert a.at < b_won[0], f"two writers for {overlap:.2f}s"


async def test_a_stalled_event_loop_does_not_delay_the_kill(
    tmp_path: Path, litestream_bin: Path, monkeypatch: pytest.MonkeyPatch,
    exits: list[Exit],
) -> None:
    """Renewals fail while the event loop is blocked for longer than the lease: Litestream
    is killed anyway, the margin before the lease it last renewed could expire."""
    ttl = 3.0
    cut = threading.Event()
    real_put = FileLeaseStore._put

    def put(self: FileLeaseStore, data: bytes, etag: str | None) -> str:
        if cut.is_set():
            raise LeaseStoreError("cut off by the test")
        return real_put(self, data, etag)

    monkeypatch.setattr(FileLeaseStore, "_put", put)
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=f"file://{replica}",
                             bin_path=litestream_bin, lease=True, lease_ttl=ttl)
    async with lifespan(app) as state:
        supervisor = state["litestream"]
        await until(lambda: supervisor.state is State.RUNNING, 30, "replicating")
        child = Exit(supervisor.pid)
        exits.append(child)
        cut.set()
        time.sleep(ttl + 1)  # noqa: ASYNC251  (the point: the event loop is stalled)
        killed_at, stalled_until = child.at, time.monotonic()
        await until(lambda: supervisor.state is State.FENCED, 10, "fenced")
        assert supervisor.restarts == 0  # the kill was no crash to restart from
    last = decode((replica / "lock.json").read_bytes(), etag="")  # A's last renewal
    expiry = monotonic_of(last.expires_at)
    assert killed_at is not None, "Litestream outlived its lease while the loop was stalled"
    print(f"\nstalled loop: killed {expiry - killed_at:.2f}s before the lease "  # noqa: T201
          f"could expire, {stalled_until - killed_at:.2f}s before the loop ran again")
    assert killed_at <= expiry - 1.0 + 0.2  # the margin of a ttl of 3 s is 1 s


async def test_forty_busy_sync_endpoints_do_not_fence_a_healthy_holder(
    tmp_path: Path, litestream_bin: Path, exits: list[Exit],
) -> None:
    """45 slow `def` endpoints hold every thread of anyio's default limiter for twice
    the lease's deadline: the holder keeps renewing, Litestream keeps running."""
    ttl = 3.0
    release = threading.Event()

    def slow(request: Request) -> PlainTextResponse:
        release.wait(30)
        return PlainTextResponse("done")

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    db = tmp_path / "app.db"
    inner = Starlette(routes=[Route("/slow", slow), Route("/ok", ok)])
    app = LitestreamLifespan(inner, database=db, replica_url=f"file://{tmp_path}/replica",
                             bin_path=litestream_bin, lease=True, lease_ttl=ttl)
    limiter = anyio.to_thread.current_default_thread_limiter()
    answers: list[int] = []
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        await until(lambda: supervisor.state is State.RUNNING, 30, "replicating")
        child = Exit(supervisor.pid)
        exits.append(child)
        await serving(http, "/ok")
        before = supervisor.status()["lease"]["expires_at"]

        async def request() -> None:
            answers.append((await http.get("/slow", timeout=60)).status_code)

        async with anyio.create_task_group() as tg:
            try:
                for _ in range(45):
                    tg.start_soon(request)
                await until(lambda: limiter.borrowed_tokens >= limiter.total_tokens, 10,
                            "every default thread busy")
                busy_since = time.monotonic()
                while time.monotonic() - busy_since < 2 * (ttl - 1.0):
                    assert supervisor.state is State.RUNNING, (
                        f"{supervisor.state.value} {time.monotonic() - busy_since:.1f}s "
                        f"after every default thread was taken: {supervisor.status()['lease']}")
                    assert limiter.borrowed_tokens >= limiter.total_tokens
                    await anyio.sleep(0.05)
                lease = supervisor.status()["lease"]
            finally:
                release.set()  # the threads cannot be cancelled
        assert child.at is None and supervisor.state is State.RUNNING
    print(f"\n45 blocked endpoints for {time.monotonic() - busy_since:.1f}s: "  # noqa: T201
          f"lease {lease['role']}, renewed to {lease['expires_at']}")
    assert answers == [200] * 45
    assert lease["role"] == "holder" and lease["expires_at"] > before


@pytest.mark.parametrize("lock", [
    b"garbage, not JSON",
    b'{"generation":7,"expires_at":"9999-12-31T23:59:59-23:59","owner":"x:1"}',
], ids=["garbage", "out-of-range"])
async def test_a_lock_that_is_no_lease_never_kills_the_lease_task(
    lock: bytes, tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """lock.json overwritten under a running holder (garbage, or a time past year 9999):
    it fences and waits, the lease task alive; once the file is deleted it takes the
    lease back and replicates again."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=f"file://{replica}",
                             bin_path=litestream_bin, lease=True, lease_ttl=3.0)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        await until(lambda: supervisor.state is State.RUNNING, 30, "replicating")
        await serving(http, "/notes")
        assert (await http.post("/notes/durable", json={"body": "one"})).status_code == 201
        (replica / "lock.json").write_bytes(lock)
        await until(lambda: supervisor.state is State.FENCED, 10, "fenced")
        await anyio.sleep(1.5)  # three polls of the lease
        lease = supervisor.status()["lease"]
        assert supervisor.state is State.FENCED and lease["role"] == "fenced"
        (replica / "lock.json").unlink()
        await until(lambda: supervisor.state is State.RUNNING, 20, "replicating again")
        assert (await http.post("/notes/durable", json={"body": "two"})).status_code == 201
    if lock.startswith(b"garbage"):
        unreadable = [r for r in caplog.records if "is not a lease" in r.getMessage()]
        assert len(unreadable) == 1, [r.getMessage() for r in unreadable]
        assert "error" in lease and "not a lease" in str(lease["error"])
    else:
        assert lease["holder"] == "x:1"
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM notes")] == ["one", "two"]
    conn.close()
