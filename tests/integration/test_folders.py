"""A folder of databases (one per tenant): a database created while the app runs is
replicated without a restart, restore on boot brings back every database the replica
holds, and durable writes and the status route work per database. Real Litestream,
real S3 (moto) and file replicas."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, durable
from tests.helpers import S3, client, lifespan, restore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def tenants_app(folder: Path) -> Starlette:
    """One SQLite file per tenant, created on its first write."""

    async def write(request: Request) -> JSONResponse:
        db = folder / f"{request.path_params['tenant']}.db"
        with sqlite3.connect(db, timeout=5) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body)")
            conn.execute("INSERT INTO notes (body) VALUES (?)", ((await request.json())["body"],))
        conn.close()
        replicated = await durable(request, database=db, timeout=15)
        return JSONResponse(replicated, status_code=201)

    return Starlette(routes=[Route("/t/{tenant}/notes", write, methods=["POST"])])


def replica_of(kind: str, tmp_path: Path, s3: S3 | None) -> tuple[str, dict[str, Any]]:
    if kind == "file":
        return f"file://{tmp_path}/replica", {}
    assert s3 is not None
    return s3.url("tenants"), {"access_key_id": s3.access_key_id,
                               "secret_access_key": s3.secret_access_key}


@pytest.fixture(params=["file", "s3"])
def replica(request: pytest.FixtureRequest, tmp_path: Path
            ) -> tuple[str, dict[str, Any], S3 | None]:
    s3 = request.getfixturevalue("s3") if request.param == "s3" else None
    url, options = replica_of(request.param, tmp_path, s3)
    return url, options, s3


def member_url(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def test_a_database_created_at_runtime_is_replicated_and_reported(
    tmp_path: Path, litestream_bin: Path, replica: tuple[str, dict[str, Any], S3 | None],
) -> None:
    """With writes flowing to two tenants, a third tenant's database created at run
    time is in the replica when its durable write returns, with no restart; the
    status route lists all three, healthy, and every acknowledged row restores."""
    url, options, s3 = replica
    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        with sqlite3.connect(folder / f"{name}.db") as conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body)")
        conn.close()
    (folder / "notes.txt").write_text("not a database, and not matching the pattern")
    app = LitestreamLifespan(tenants_app(folder), database=f"{folder}/*.db", replica_url=url,
                             bin_path=litestream_bin, health_interval=0.2, public_details=True,
                             **options)
    acknowledged: dict[str, list[str]] = {"acme": [], "globex": [], "initech": []}
    async with lifespan(app) as state, client(app, state) as http:
        pid = state["litestream"].pid

        async def steady(tenant: str, count: int) -> None:
            for i in range(count):
                body = f"{tenant}-{i}"
                response = await http.post(f"/t/{tenant}/notes", json={"body": body})
                assert response.status_code == 201, response.text
                acknowledged[tenant].append(body)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as load:
            load.start_soon(steady, "acme", 15)
            load.start_soon(steady, "globex", 15)
            await anyio.sleep(0.3)
            created = await http.post("/t/initech/notes", json={"body": "initech-0"})
            assert created.status_code == 201, created.text
            assert str(folder / "initech.db") in created.json()
            acknowledged["initech"].append("initech-0")
        assert state["litestream"].pid == pid  # the same Litestream: no restart
        with anyio.fail_after(10):
            while True:  # the next poll lists the new database
                status = (await http.get("/_litestream/status?strict=1")).json()
                if len(status["databases"]) == 3 and status["healthy"]:
                    break
                await anyio.sleep(0.1)
        assert {Path(d["path"]).name for d in status["databases"]} == {
            "acme.db", "globex.db", "initech.db"}
        by_name = {Path(d["path"]).name: d for d in status["databases"]}
        assert by_name["initech.db"]["replica"].startswith(url.split("?")[0] + "/initech.db")
    env = s3.env() if s3 else None
    for tenant, rows in acknowledged.items():
        restored = restore(litestream_bin, member_url(url, f"{tenant}.db"),
                           tmp_path / f"check-{tenant}.db", env)
        assert restored == rows, tenant


async def test_restore_on_boot_brings_back_every_database_of_the_folder(
    tmp_path: Path, litestream_bin: Path, replica: tuple[str, dict[str, Any], S3 | None],
) -> None:
    """A fresh volume: every database the folder's replica holds is restored before the
    app starts, a database still on disk is kept as it is, and files of another pattern
    in the replica are left alone."""
    url, options, _ = replica
    folder = tmp_path / "tenants"
    folder.mkdir()
    names = [f"tenant{i}" for i in range(12)]

    def app() -> LitestreamLifespan:
        return LitestreamLifespan(tenants_app(folder), database=f"{folder}/*.db",
                                  replica_url=url, bin_path=litestream_bin, **options)

    first = app()
    async with lifespan(first) as state, client(first, state) as http:
        for name in names:
            for i in range(2):
                response = await http.post(f"/t/{name}/notes", json={"body": f"{name}-{i}"})
                assert response.status_code == 201, response.text
    kept = folder / "tenant0.db"
    with sqlite3.connect(kept) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('local only')")
    conn.close()
    for path in folder.iterdir():
        if path != kept and path.is_file() and not path.name.startswith(".litestream"):
            path.unlink()
    for path in folder.glob(".*-litestream"):
        if path.is_dir() and "tenant0" not in path.name:
            import shutil

            shutil.rmtree(path)
    second = app()
    async with lifespan(second):
        for name in names:
            with sqlite3.connect(f"file:{folder / name}.db?mode=ro", uri=True) as conn:
                rows = [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]
            conn.close()
            expected = [f"{name}-0", f"{name}-1"] + (["local only"] if name == "tenant0" else [])
            assert rows == expected, name


async def test_the_cli_restores_every_database_of_a_folder(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """`asgi-litestream restore --database 'folder/*.db'` restores each database the
    replica holds, as the app would on boot."""
    from tests.cli.test_cli import cli

    folder = tmp_path / "tenants"
    folder.mkdir()
    url = f"file://{tmp_path}/replica"
    app = LitestreamLifespan(tenants_app(folder), database=f"{folder}/*.db", replica_url=url,
                             bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        for name in ("a", "b", "c"):
            assert (await http.post(f"/t/{name}/notes", json={"body": name})).status_code == 201
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("restore", "--database", f"{elsewhere}/*.db", "--replica-url", url,
                 "--bin-path", str(litestream_bin))
    assert result.returncode == 0, result.stderr
    for name in ("a", "b", "c"):
        with sqlite3.connect(elsewhere / f"{name}.db") as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [(name,)]
        conn.close()


async def test_a_folder_pattern_must_be_in_the_file_name(tmp_path: Path) -> None:
    """A pattern in the folder part, or a folder that does not exist, is refused at
    startup with the fix, before anything is spawned."""
    from asgi_litestream import ConfigError

    for database, fix in ((f"{tmp_path}/*/app.db", "one folder and a file pattern"),
                          (f"{tmp_path}/missing/*.db", "create the folder")):
        app = LitestreamLifespan(tenants_app(tmp_path), database=database,
                                 replica_url=f"file://{tmp_path}/replica")
        with pytest.raises(Exception) as failure:
            async with lifespan(app):
                pass
        error = getattr(failure.value, "error", None)
        assert isinstance(error, ConfigError) and fix in str(error), failure.value
