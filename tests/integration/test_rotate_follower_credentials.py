"""A read replica's keys rotate without a restart of the app: through the key files and
by name; real Litestream (`replicate` on the primary, `restore -f` on the follower), real
S3 (moto, which does not check keys: these tests prove the mechanics: each follower's
`restore -f` starts again once, readiness stays 200, rows written after still arrive)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, connect_readonly, rotate_credentials
from tests.helpers import S3, client, lifespan, notes_app
from tests.integration.test_rotate_credentials import key_files

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
STATUS = "/_litestream/status"


def counting_app(copies: list[Path]) -> Starlette:
    """Rows in each copy, read as a follower reads: read-only, one connection a request."""

    async def counts(request: Request) -> JSONResponse:
        found = []
        for copy in copies:
            conn = connect_readonly(copy)
            try:
                found.append(conn.execute("SELECT count(*) FROM notes").fetchone()[0])
            finally:
                conn.close()
        return JSONResponse(found)

    return Starlette(routes=[Route("/counts", counts)])


def write(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
            conn.executemany("INSERT INTO notes (body) VALUES (?)", [("x",)] * rows)
    finally:
        conn.close()


async def write_everywhere(p_state: dict[str, Any], dbs: list[Path], rows: int) -> None:
    """``rows`` more rows in each of the primary's databases, in the replica on return."""
    for db in dbs:
        write(db, rows)
    await p_state["litestream"].sync()


class Watch:
    """Polls the follower's status route while it runs (every answer's code) and its
    status (each database's `restore -f` pids, in the order they showed)."""

    def __init__(self, http: httpx.AsyncClient, replica: Any) -> None:
        self.http = http
        self.replica = replica
        self.codes: list[int] = []
        self.pids: dict[str, list[int]] = {}
        self.last: dict[str, Any] = {}

    async def run(self) -> None:
        while True:
            self.codes.append((await self.http.get(STATUS)).status_code)
            self.last = self.replica.status()
            for database in self.last["databases"]:
                seen = self.pids.setdefault(database["path"], [])
                if database["pid"] is not None and database["pid"] not in seen[-1:]:
                    seen.append(database["pid"])
            await anyio.sleep(0.01)


async def until(check: Any, what: str, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)


async def caught_up(http: httpx.AsyncClient, expected: list[int]) -> None:
    with anyio.fail_after(30):  # 503 behind the gate until the copies are in place
        while (response := await http.get("/counts")).status_code != 200 or \
                response.json() != expected:
            await anyio.sleep(0.05)


def primary_of(tmp_path: Path, s3: S3, litestream_bin: Path) -> tuple[LitestreamLifespan,
                                                                     list[Path]]:
    """A primary of two databases on S3 (moto), syncing every 100 ms."""
    folder = tmp_path / "primary"
    folder.mkdir()
    dbs = [folder / "a.db", folder / "b.db"]
    for db in dbs:
        write(db, 3)
    app = LitestreamLifespan(
        notes_app(dbs[0]), bin_path=litestream_bin, sync_interval=0.1,
        replica_url={db: s3.url(db.stem) for db in dbs}, access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key, name="primary")
    return app, dbs


def follower_of(tmp_path: Path, s3: S3, litestream_bin: Path, **keys: Any
                ) -> tuple[LitestreamLifespan, list[Path]]:
    """A read replica of the primary's two databases, named "follower"."""
    folder = tmp_path / "follower"
    folder.mkdir()
    copies = [folder / "a.db", folder / "b.db"]
    app = LitestreamLifespan(
        counting_app(copies), bin_path=litestream_bin, role="follower",
        replica_url={copy: s3.url(copy.stem) for copy in copies}, sync_interval=0.1,
        health_interval=0.2, name="follower", **keys)
    return app, copies


@pytest.mark.anyio
async def test_new_key_files_restart_each_follower_once_and_readiness_stays(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture,
) -> None:
    """New keys in both files: each database's `restore -f` starts again with them,
    once (uncounted), the status route answers 200 all through the swap, and rows the
    primary writes after it reach the copies."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    primary, dbs = primary_of(tmp_path, s3, litestream_bin)
    files = key_files(tmp_path, s3.access_key_id, s3.secret_access_key)
    follower, copies = follower_of(tmp_path, s3, litestream_bin, **files)
    async with lifespan(primary) as p_state:
        await p_state["litestream"].sync()
        async with lifespan(follower) as f_state, client(follower, f_state) as http:
            await caught_up(http, [3, 3])
            # Rows since the copies were made: the copies are now past the replica's
            # snapshot, where 0.5.17 will not resume (the usual case, after a while).
            await write_everywhere(p_state, dbs, 1)
            await caught_up(http, [4, 4])
            await until(lambda: f_state["litestream"].status()["healthy"], "healthy")
            first = f_state["litestream"].status()["credentials"]
            assert first["source"] == "file"
            watch = Watch(http, f_state["litestream"])
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(watch.run)
                await until(lambda: len(watch.pids) == 2, "pids seen")
                before = {path: pids[-1] for path, pids in watch.pids.items()}
                files["access_key_id_file"].write_text("AKIA-ROTATED-1\n")
                files["secret_access_key_file"].write_text("secret-rotated-1\n")
                await until(lambda: "credentials rotated (source file)" in caplog.text,
                            "the rotation")
                await until(lambda: all(d["pid"] not in (None, before[d["path"]])
                                        for d in watch.last["databases"]), "new pids")
                await write_everywhere(p_state, dbs, 2)
                await caught_up(http, [6, 6])
                # Several more checks of the files: nothing more is restarted.
                settled = {d["path"]: d["pid"] for d in watch.last["databases"]}
                await anyio.sleep(1.0)
                task_group.cancel_scope.cancel()
            status = f_state["litestream"].status()
    assert watch.codes and set(watch.codes) == {200}, watch.codes
    assert {d["path"]: d["pid"] for d in status["databases"]} == settled
    assert status["restarts"] == 0 and all(d["restarts"] == 0 for d in status["databases"])
    assert status["credentials"]["source"] == "file"
    assert status["credentials"]["loaded_at"] > first["loaded_at"]
    assert caplog.text.count("credentials rotated (source file)") == 1
    assert "2 of 2 followers started again" in caplog.text
    for copy in copies:
        # One new `restore -f`: it resumes, or (as 0.5.17 nearly always has it) is
        # refused once and restores a fresh copy beside the old one.
        assert caplog.text.count(f"cannot resume following {copy}") <= 1
        assert len(watch.pids[str(copy)]) <= 3, watch.pids
    assert "secret-rotated-1" not in caplog.text and "AKIA-ROTATED-1" not in caplog.text
    assert "secret-rotated-1" not in str(status)


@pytest.mark.anyio
async def test_rotate_credentials_by_name_reaches_a_read_replica(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture,
) -> None:
    """rotate_credentials("follower", ...) restarts each follower's `restore -f` with
    the keys, uncounted; the status says source "call"; rows still arrive."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    primary, dbs = primary_of(tmp_path, s3, litestream_bin)
    follower, _ = follower_of(tmp_path, s3, litestream_bin, access_key_id=s3.access_key_id,
                              secret_access_key=s3.secret_access_key)
    async with lifespan(primary) as p_state:
        await p_state["litestream"].sync()
        async with lifespan(follower) as f_state, client(follower, f_state) as http:
            await write_everywhere(p_state, dbs, 1)
            await caught_up(http, [4, 4])
            replica = f_state["litestream"]
            before = [d["pid"] for d in replica.status()["databases"]]
            assert replica.status()["credentials"]["source"] == "option"
            await rotate_credentials("follower", access_key_id="AKIA-ROTATED-2",
                                     secret_access_key="secret-rotated-2")
            assert replica.status()["credentials"]["source"] == "call"
            # Started again (a refused resume may come and go first: then a fresh copy).
            await until(lambda: all(d["pid"] not in (None, *before)
                                    for d in replica.status()["databases"]), "new pids")
            await write_everywhere(p_state, dbs, 3)
            await caught_up(http, [7, 7])
            assert (await http.get(STATUS)).status_code == 200
            assert replica.status()["restarts"] == 0
    assert "secret-rotated-2" not in caplog.text
