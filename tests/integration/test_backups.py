"""Restore points and point-in-time restore, against the real Litestream and a real S3
server (moto): two writes a second apart, then rewind to between them."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from asgi_litestream._config.settings import Settings
from asgi_litestream._exceptions import RestoreError
from asgi_litestream._restore.points import list_restore_points, restore_to
from tests.cli.test_cli import cli
from tests.helpers import S3, client, lifespan, notes_app

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class History:
    """A database whose replica holds "before", then (after ``between``) "after"."""

    db: Path
    s3: S3
    between: datetime
    txid_before: int
    txid_after: int
    litestream_bin: Path

    @property
    def settings(self) -> Settings:
        return Settings.from_options(database=self.db, replica_url=self.s3.url(),
                                     access_key_id=self.s3.access_key_id,
                                     secret_access_key=self.s3.secret_access_key,
                                     bin_path=self.litestream_bin)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--database", str(self.db), "--replica-url", self.s3.url(),
                   env=cli_env(self.s3, self.litestream_bin))


def cli_env(s3: S3, litestream_bin: Path) -> dict[str, str]:
    return {"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
            "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
            "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}


def notes(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


def app_for(db: Path, s3: S3, litestream_bin: Path) -> LitestreamLifespan:
    return LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                              bin_path=litestream_bin, access_key_id=s3.access_key_id,
                              secret_access_key=s3.secret_access_key)


@pytest.fixture(scope="module")
def history(moto_endpoint: str, litestream_bin: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """One app run (shared by this module's tests): a durable "before", the time
    ``between``, a second later a durable "after"; then the app stops."""
    s3 = S3(endpoint=moto_endpoint, bucket="bk-" + uuid.uuid4().hex[:12],
            access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
            secret_access_key="sEcReT-" + uuid.uuid4().hex)
    s3.create_bucket()
    db = tmp_path_factory.mktemp("history") / "app.db"
    app = app_for(db, s3, litestream_bin)
    moments: dict[str, object] = {}

    async def write() -> None:
        async with lifespan(app) as state, client(app, state) as http:
            supervisor = state["litestream"]
            for body in ("before", "after"):
                if body == "after":
                    moments["between"] = datetime.now(timezone.utc)
                    # The replica's clock for a file may be its upload second (S3
                    # LastModified): stay a whole second clear of both writes.
                    await anyio.sleep(1.1)
                response = await http.post("/notes/durable", json={"body": body})
                assert response.status_code == 201 and response.json()["replicated"]
                moments[body] = (await supervisor.sync())[str(db)]

    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY"):
            env.delenv(name, raising=False)
        anyio.run(write)
        yield History(db=db, s3=s3, between=moments["between"],  # type: ignore[arg-type]
                      txid_before=moments["before"],  # type: ignore[arg-type]
                      txid_after=moments["after"],  # type: ignore[arg-type]
                      litestream_bin=litestream_bin)


def test_timestamp_between_two_writes_restores_exactly_the_first(
    history: History, tmp_path: Path
) -> None:
    """restore_to(timestamp=) between two writes gives the first write and not the second."""
    started = time.monotonic()
    txid = restore_to(history.settings, history.litestream_bin, history.db,
                      tmp_path / "rewound.db", timestamp=history.between)
    elapsed = time.monotonic() - started
    assert notes(tmp_path / "rewound.db") == ["before"]
    assert history.txid_before <= txid < history.txid_after
    assert notes(history.db) == ["before", "after"]  # the live database is untouched
    print(f"PITR restore from S3: {elapsed:.2f}s")  # noqa: T201 - measured in the report


def test_cli_timestamp_restores_the_first_into_a_side_file(
    history: History, tmp_path: Path
) -> None:
    """`restore --timestamp T --output FILE` writes FILE as of T and says which txid."""
    out = tmp_path / "side.db"
    when = history.between.isoformat().replace("+00:00", "Z")
    result = history.cli("restore", "--timestamp", when, "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"restored {history.db} as of txid ")
    assert result.stdout.endswith(f" into {out}\n")
    assert notes(out) == ["before"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["side.db"]  # no temporary left


def test_txid_restores_exactly_that_point(history: History, tmp_path: Path) -> None:
    """`--txid` (decimal or Litestream's hex) and txid= restore exactly that state."""
    result = history.cli("restore", "--txid", str(history.txid_before),
                         "--output", str(tmp_path / "a.db"))
    assert result.returncode == 0, result.stderr
    assert f"as of txid {history.txid_before} into" in result.stdout
    assert notes(tmp_path / "a.db") == ["before"]
    result = history.cli("restore", "--txid", f"{history.txid_after:016x}",
                         "--output", str(tmp_path / "b.db"))
    assert result.returncode == 0, result.stderr
    assert notes(tmp_path / "b.db") == ["before", "after"]
    assert restore_to(history.settings, history.litestream_bin, "app.db", tmp_path / "c.db",
                      txid=history.txid_before) == history.txid_before
    assert notes(tmp_path / "c.db") == ["before"]


def test_backups_lists_both_writes(history: History) -> None:
    """`backups` (table and --json) and list_restore_points list both writes, in order."""
    points = list_restore_points(history.settings, history.litestream_bin)
    txids = [p.txid for p in points]
    assert history.txid_before in txids and history.txid_after in txids
    assert txids == sorted(txids)
    before = points[txids.index(history.txid_before)]
    after = points[txids.index(history.txid_after)]
    assert before.created <= history.between < after.created
    listed = history.cli("backups", "--json")
    assert listed.returncode == 0, listed.stderr
    (database,) = json.loads(listed.stdout)["databases"]
    assert database["path"] == str(history.db)
    assert [p["txid"] for p in database["restore_points"]] == txids
    table = history.cli("backups")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"{history.db}  (replica {history.s3.url()})"
    assert lines[1].startswith(f"  {len(points)} restore points: txid {txids[0]} to {txids[-1]}")
    rows = {line.split()[0]: line for line in lines[3:3 + len(points)]}
    assert rows[str(history.txid_after)].split()[1] == after.created.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert history.s3.secret_access_key not in table.stdout + table.stderr


def test_output_to_an_existing_file_is_refused(history: History, tmp_path: Path) -> None:
    """`--output` never overwrites: an existing file is refused (exit 1) and left as it was."""
    out = tmp_path / "taken.db"
    out.write_text("mine")
    result = history.cli("restore", "--timestamp", history.between.isoformat(),
                         "--output", str(out))
    assert result.returncode == 1
    assert f"{out} already exists; refusing to overwrite it" in result.stderr
    assert out.read_text() == "mine"


@pytest.mark.anyio
async def test_restore_over_a_running_app_is_refused_until_it_stops(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """`restore --force` and an in-place restore_to are refused while an app runs the
    database (it holds the leader lock); once it stops, --force replaces the file."""
    db = tmp_path / "app.db"
    app = app_for(db, s3, litestream_bin)
    settings = Settings.from_options(database=db, replica_url=s3.url(),
                                     access_key_id=s3.access_key_id,
                                     secret_access_key=s3.secret_access_key)
    args = ("restore", "--force", "--database", str(db), "--replica-url", s3.url())
    env = cli_env(s3, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes/durable", json={"body": "kept"})).status_code == 201
        refused = await anyio.to_thread.run_sync(lambda: cli(*args, env=env))
        assert refused.returncode == 1
        assert f"{db} is in use: an app is running it (pid {os.getpid()})" in refused.stderr
        with pytest.raises(RestoreError, match="is in use"):
            await anyio.to_thread.run_sync(
                lambda: restore_to(settings, litestream_bin, db, txid=1))
        assert (await http.get("/notes")).json() == ["kept"]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO notes (body) VALUES ('never replicated')")
    allowed = cli(*args, env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert notes(db) == ["kept"]
