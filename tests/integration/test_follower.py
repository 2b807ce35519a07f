"""Read replicas against the real binary: a real primary (`litestream replicate`,
started here) writes; followers keep a read-only copy with `litestream restore -f`,
on a file replica and on S3 (moto)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._follower.copy import connect_readonly
from asgi_litestream._follower.group import FollowerSet
from asgi_litestream._litestream.control import ControlClient, ControlError
from asgi_litestream._litestream.logs import LitestreamLog
from tests.helpers import S3

pytestmark = [pytest.mark.anyio, pytest.mark.integration,
              pytest.mark.usefixtures("_no_stray_files")]

DEADLINE = 30.0  # a failure condition, never a speed claim


@dataclass
class Replica:
    url: str
    env: dict[str, str]
    secrets: list[str]
    folder: Path | None = None  # a file replica
    s3: S3 | None = None

    def objects(self) -> set[tuple[str, int]]:
        """Every object of the replica: (name, size)."""
        if self.folder is not None:
            return {(str(p.relative_to(self.folder)), p.stat().st_size)
                    for p in self.folder.rglob("*") if p.is_file()}
        import boto3

        assert self.s3 is not None
        client = boto3.client("s3", endpoint_url=self.s3.endpoint, region_name="us-east-1",
                              aws_access_key_id=self.s3.access_key_id,
                              aws_secret_access_key=self.s3.secret_access_key)
        found = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.s3.bucket):
            found.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
        return found


@pytest.fixture(params=["file", "s3"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Replica:
    """The primary's replica: a folder, or a fresh bucket on moto."""
    if request.param == "file":
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        folder = tmp_path / "replica"
        return Replica(url=f"file://{folder}", env=env, secrets=[], folder=folder)
    s3: S3 = request.getfixturevalue("s3")
    return Replica(url=s3.url("app"), env=s3.env(), secrets=[s3.secret_access_key], s3=s3)


@dataclass
class Primary:
    """A real `litestream replicate` of ``db`` (syncing every 100 ms), and a writer."""

    binary: Path
    db: Path
    replica: Replica
    folder: Path
    process: anyio.abc.Process | None = None
    control: ControlClient | None = None
    written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def start(self) -> None:
        socket = self.folder / "ls.sock"
        config = self.folder / "litestream.yml"
        config.write_text(
            f"socket: {{enabled: true, path: {socket}, permissions: 0600}}\n"
            f"dbs:\n  - path: {self.db}\n    monitor-interval: 100ms\n"
            f"    replica: {{url: '{self.replica.url}', sync-interval: 100ms}}\n")
        with sqlite3.connect(self.db) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
        conn.close()
        log = (self.folder / "primary.log").open("ab")
        self.process = await anyio.open_process(
            [str(self.binary), "replicate", "-config", str(config)], env=self.replica.env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        self.control = ControlClient(socket)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if (await self.control.info()).get("pid") == self.process.pid:
                    return
            except ControlError:
                pass
            assert self.process.returncode is None, (self.folder / "primary.log").read_text()
            assert time.monotonic() < deadline, "the primary did not start"
            await anyio.sleep(0.02)

    def write(self, rows: int = 5, size: int = 300) -> None:
        """One transaction of ``rows`` rows (any thread)."""
        with self._lock:
            conn = sqlite3.connect(self.db, timeout=10)
            try:
                with conn:
                    conn.executemany("INSERT INTO t (v) VALUES (randomblob(?))",
                                     [(size,)] * rows)
            finally:
                conn.close()
            self.written += rows

    async def commit(self, rows: int = 5) -> int:
        """Write, and return the txid once the replica holds it (what a primary hands
        its client for read-your-writes)."""
        self.write(rows)
        assert self.control is not None
        with anyio.fail_after(DEADLINE):
            return (await self.control.sync_durably(self.db, timeout=DEADLINE)).txid

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.aclose()
        if self.process is not None:
            with anyio.CancelScope(shield=True):
                if self.process.returncode is None:
                    self.process.terminate()
                    with anyio.move_on_after(DEADLINE):
                        await self.process.wait()
                    if self.process.returncode is None:
                        self.process.kill()
                await self.process.aclose()


@pytest.fixture
async def primary(tmp_path: Path, litestream_bin: Path,
                  replica: Replica) -> AsyncIterator[Primary]:
    """Not started yet: each test starts it when it wants."""
    folder = tmp_path / "primary"
    folder.mkdir()
    found = Primary(litestream_bin, folder / "app.db", replica, folder)
    try:
        yield found
    finally:
        await found.stop()


@asynccontextmanager
async def following(copy: Path, replica: Replica, litestream_bin: Path,
                    ) -> AsyncIterator[FollowerSet]:
    """A running FollowerSet keeping ``copy`` (polling every 100 ms)."""
    followers = FollowerSet(litestream_bin, [Database(path=copy, replica_url=replica.url)],
                            env=replica.env, log=LitestreamLog(replica.secrets),
                            secrets=replica.secrets, interval=0.1, health_interval=0.3)
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            yield followers
        finally:
            await followers.close()


def count(copy: Path) -> int:
    conn = connect_readonly(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


async def eventually(check: object, what: str) -> None:
    """Until ``check()`` is true; fail after DEADLINE."""
    assert callable(check)
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, what
        await anyio.sleep(0.02)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    (tmp_path / "follower").mkdir()
    return tmp_path / "follower" / "app.db"


@pytest.fixture
def _no_stray_files(copy: Path) -> Iterator[None]:
    """Once the followers stopped, only the copy and its position are left."""
    yield
    assert {p.name for p in copy.parent.iterdir()} <= {copy.name, f"{copy.name}-txid"}


async def test_rows_written_on_the_primary_reach_the_copy(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
) -> None:
    """A copy is restored, then follows: wait_for(txid) returns once the primary's rows
    are readable, also through a connection held open all along; the lag comes back to
    zero and the status says so."""
    await primary.start()
    txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_ready(DEADLINE)
        assert await followers.wait_for(copy, txid, DEADLINE)
        assert count(copy) == primary.written
        held = connect_readonly(copy)
        try:
            for _ in range(3):
                txid = await primary.commit()
                assert await followers.wait_for(copy, txid, DEADLINE)
                assert count(copy) == primary.written
                assert held.execute("SELECT count(*) FROM t").fetchone() == (primary.written,)
        finally:
            held.close()
        await eventually(lambda: followers.healthy(), "the copy never caught up")
        status = followers.snapshot()[0]
        assert status["ready"] and status["behind_txns"] == 0 and status["behind_s"] == 0.0
        assert status["copy_txid"] >= txid and status["replica_txid"] >= txid
        assert status["restarts"] == 0 and status["error"] is None and status["pid"]
        if replica.s3 is not None:
            assert replica.s3.secret_access_key not in repr(followers.snapshot())


async def test_a_killed_follower_is_restarted_and_catches_up(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
) -> None:
    """SIGKILL its Litestream: it is restarted (counted, exit code kept) and rows
    written after the kill reach the copy."""
    await primary.start()
    txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_for(copy, txid, DEADLINE)
        pid = followers.snapshot()[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        txid = await primary.commit()
        await eventually(lambda: followers.snapshot()[0]["restarts"] == 1,
                         "it was not restarted")
        assert await followers.wait_for(copy, txid, DEADLINE)
        assert count(copy) == primary.written
        status = followers.snapshot()[0]
        assert status["last_exit_code"] == -signal.SIGKILL
        assert status["pid"] not in (None, pid) and status["ready"]


async def test_a_new_follower_over_an_old_copy_catches_up(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stop the followers, write on, start new ones on the same copy: they resume, or
    restore afresh beside the old copy, and catch up."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    await primary.start()
    txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_for(copy, txid, DEADLINE)
    assert Path(f"{copy}-txid").exists()  # its position, kept for a resume
    for _ in range(3):
        txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_for(copy, txid, DEADLINE)
        assert count(copy) == primary.written
        assert followers.snapshot()[0]["restarts"] == 0
    assert "cannot resume following" in caplog.text or "resumed following" in caplog.text


async def test_the_follower_never_writes_to_the_replica(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
) -> None:
    """With the primary stopped, the follower alone (restarted once, so that it also
    restores) leaves the replica's objects exactly as they were."""
    await primary.start()
    txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_for(copy, txid, DEADLINE)
        await primary.stop()
        before = replica.objects()
        assert before  # the primary did replicate
        os.kill(followers.snapshot()[0]["pid"], signal.SIGKILL)
        await eventually(lambda: followers.snapshot()[0]["restarts"] == 1
                         and followers.snapshot()[0]["pid"], "it was not restarted")
        await anyio.sleep(2)  # twenty polls of the replica
        assert followers.snapshot()[0]["copy_txid"] == txid
        assert replica.objects() == before


async def test_an_empty_replica_is_waited_on_quietly_until_the_first_backup(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing replicated yet: the follower waits (one log line, no restart, no
    warning), then restores as soon as the primary has synced."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    async with following(copy, replica, litestream_bin) as followers:
        await anyio.sleep(2.5)
        status = followers.snapshot()[0]
        assert not followers.ready and not copy.exists()
        assert status["restarts"] == 0 and status["last_exit_code"] is None
        assert caplog.text.count("holds no backup yet") == 1
        # Ours only: Python 3.10's asyncio child watcher may warn "Unknown child
        # process pid" for a process that exits this fast (a CPython race, not ours).
        assert not [r for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name.startswith("asgi_litestream")]
        await primary.start()
        txid = await primary.commit()
        assert await followers.wait_ready(DEADLINE)
        assert await followers.wait_for(copy, txid, DEADLINE)
        assert count(copy) == primary.written


async def test_readers_of_the_copy_never_see_a_torn_database(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
) -> None:
    """While the primary writes and the copy follows, readers (one connection held open,
    one per read) only ever see whole transactions: every count is a multiple of 5,
    the newest row never goes back, the quick_check passes; the only error allowed is
    busy."""
    await primary.start()
    txid = await primary.commit()
    async with following(copy, replica, litestream_bin) as followers:
        assert await followers.wait_for(copy, txid, DEADLINE)
        stop = threading.Event()
        errors: list[str] = []
        seen: dict[str, list[int]] = {"held": [], "fresh": []}  # newest id, per read
        counts: dict[str, list[int]] = {"held": [], "fresh": []}

        def read(kind: str) -> None:
            held = connect_readonly(copy) if kind == "held" else None
            try:
                while not stop.is_set():
                    conn = held or connect_readonly(copy)
                    try:
                        rows, size, last = conn.execute(
                            "SELECT count(*), coalesce(sum(length(v)), 0), coalesce(max(id), 0)"
                            " FROM t").fetchone()
                        # The count may drop by a delete's 5 rows between two reads; the
                        # newest id never goes back, unless an older state is read.
                        if rows % 5 or size != rows * 300 or last < max(seen[kind], default=0):
                            errors.append(f"{kind}: torn read: {rows} rows, {size} bytes, "
                                          f"last id {last}")
                        seen[kind].append(last)
                        counts[kind].append(rows)
                        if len(seen[kind]) % 25 == 0:
                            check = conn.execute("PRAGMA quick_check").fetchall()
                            if check != [("ok",)]:
                                errors.append(f"{kind}: quick_check: {check}")
                    except sqlite3.Error as exc:
                        if "locked" not in str(exc) and "busy" not in str(exc):
                            errors.append(f"{kind}: {exc}")
                    finally:
                        if held is None:
                            conn.close()
            finally:
                if held is not None:
                    held.close()

        def write() -> None:
            for n in range(60):
                primary.write(rows=5)
                if n % 10 == 9:  # frees pages: the tree reshapes under the readers
                    with sqlite3.connect(primary.db, timeout=10) as conn:
                        conn.execute("DELETE FROM t WHERE id IN "
                                     "(SELECT id FROM t ORDER BY id LIMIT 5)")
                    conn.close()
                    primary.written -= 5
                time.sleep(0.03)

        readers = [threading.Thread(target=read, args=(kind,)) for kind in seen]
        for reader in readers:
            reader.start()
        try:
            await anyio.to_thread.run_sync(write)
            txid = await primary.commit()
            assert await followers.wait_for(copy, txid, DEADLINE)
            await anyio.sleep(0.3)
        finally:
            stop.set()
            for reader in readers:
                await anyio.to_thread.run_sync(reader.join)
        assert errors == []
        for kind, ids in seen.items():
            assert len(set(ids)) > 5, f"{kind} saw too few updates to prove anything"
            assert counts[kind][-1] == primary.written, kind


async def test_a_copy_held_back_by_a_reader_shows_lag_and_still_closes(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read transaction left open blocks Litestream's next update (it waits for
    SQLite's lock, and SIGTERM cannot interrupt that): the status shows the copy
    falling behind (the replica's head probed), and close() still returns, killing
    Litestream past the grace period, leaving no child."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    await primary.start()
    txid = await primary.commit()
    reader = None
    try:
        async with following(copy, replica, litestream_bin) as followers:
            assert await followers.wait_for(copy, txid, DEADLINE)
            reader = connect_readonly(copy)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchall()
            behind = await primary.commit()
            await eventually(lambda: (followers.snapshot()[0]["behind_s"] or 0) > 0.5,
                             "the lag never showed")
            status = followers.snapshot()[0]
            assert status["copy_txid"] == txid and status["replica_txid"] == behind
            assert status["behind_txns"] == behind - txid
            assert not followers.healthy(max_lag=0.5) and followers.healthy(max_lag=60)
        assert "did not stop within" in caplog.text
    finally:
        if reader is not None:
            reader.close()




async def test_a_follower_can_name_its_replica_through_a_config_file(
    primary: Primary, replica: Replica, copy: Path, litestream_bin: Path,
) -> None:
    """Given Litestream's config file, the follower and its probe name the database,
    never the replica URL, on the command line; the copy follows, the lag is known."""
    config = copy.parent / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {copy}\n    replica: {{url: '{replica.url}'}}\n")
    await primary.start()
    txid = await primary.commit()
    followers = FollowerSet(litestream_bin, [Database(path=copy, replica_url=replica.url)],
                            env=replica.env, log=LitestreamLog(replica.secrets),
                            config_path=config, interval=0.1, health_interval=0.3)
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            assert await followers.wait_for(copy, txid, DEADLINE)
            argv = Path(f"/proc/{followers.snapshot()[0]['pid']}/cmdline").read_bytes()
            assert b"-config" in argv and replica.url.encode() not in argv
            txid = await primary.commit()
            assert await followers.wait_for(copy, txid, DEADLINE)
            await eventually(lambda: followers.snapshot()[0]["replica_txid"] is not None
                             and followers.healthy(), "the lag never became known")
        finally:
            await followers.close()
    config.unlink()
