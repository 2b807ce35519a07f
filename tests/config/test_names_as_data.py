"""Names found in a folder's replica are data, never config: tenants named with '$',
spaces, quotes and newlines are restored under their own names, on boot and by the CLI;
a name that cannot be a file here (not UTF-8) is skipped with an error line naming it,
and every other tenant is restored all the same. Real Litestream, file:// and S3 (moto)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette

from asgi_litestream import LitestreamLifespan
from tests.cli.test_cli import cli
from tests.helpers import S3, lifespan

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# '$HOME' and '${PWD}' name variables that are set: expanded, they would be other names.
NAMES = ["$HOME.db", "${PWD}.db", "a b.db", "q\"'.db", "nl\n.db", "plain.db"]
# moto answers 404 to a key with a newline (S3 itself takes it): not on S3 here.
S3_NAMES = [name for name in NAMES if "\n" not in name]
NOT_UTF8 = "%FF.db"  # a file:// replica's folder for the file name b"\xff.db"


def _seed(litestream_bin: Path, folder: Path, url: str, env: dict[str, str],
          names: list[str]) -> None:
    """One row per tenant (its own name), replicated by Litestream itself, then the
    folder emptied: only the replica holds the tenants."""
    folder.mkdir()
    for name in names:
        with sqlite3.connect(folder / name) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES (?)", (name,))
        conn.close()
    config = folder.parent / "seed.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"dir": str(folder), "pattern": "*.db",
                                               "replica": {"url": url}}]}))
    result = subprocess.run([str(litestream_bin), "replicate", "-once", "-config", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(folder)
    folder.mkdir()


def _rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = [r[0] for r in conn.execute("SELECT body FROM notes")]
    conn.close()
    return rows


def _databases(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name.endswith(".db")}


@pytest.fixture(params=["file", "s3"])
def replica(request: pytest.FixtureRequest, tmp_path: Path, litestream_bin: Path
            ) -> tuple[str, dict[str, Any], list[str]]:
    """A replica seeded with tenants (file:// also with a non-UTF-8 one), and their names."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    names = NAMES
    if request.param == "file":
        url, options = f"file://{tmp_path}/replica", {}
    else:
        names = S3_NAMES
        s3: S3 = request.getfixturevalue("s3")
        url = s3.url("tenants")
        options = {"access_key_id": s3.access_key_id,
                   "secret_access_key": s3.secret_access_key}
        env = s3.env()
    _seed(litestream_bin, tmp_path / "seed", url, env, names)
    if request.param == "file":
        # Litestream cannot replicate such a file (it panics): only by hand.
        shutil.copytree(tmp_path / "replica" / "plain.db", tmp_path / "replica" / NOT_UTF8)
    return url, options, names


async def test_restore_on_boot_restores_every_name(
    tmp_path: Path, litestream_bin: Path, replica: tuple[str, dict[str, Any], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fresh volume: each tenant comes back under its own name before the app starts;
    the non-UTF-8 one is named in an error line and restored nowhere."""
    url, options, names = replica
    folder = tmp_path / "tenants"
    folder.mkdir()
    app = LitestreamLifespan(Starlette(), database=f"{folder}/*.db", replica_url=url,
                             bin_path=litestream_bin, restore_timeout=15, **options)
    with caplog.at_level(logging.INFO, logger="asgi_litestream"):
        async with lifespan(app):
            assert _databases(folder) == set(names)
    for name in names:
        assert _rows(folder / name) == [name], name
    if url.startswith("file:"):
        skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
                   and "cannot be a database file" in r.getMessage()]
        assert len(skipped) == 1 and repr(NOT_UTF8) in skipped[0], skipped
        assert "not valid UTF-8" in skipped[0]
        assert os.fsencode(NOT_UTF8) not in os.listdir(os.fsencode(folder))


async def test_the_cli_restores_every_name(
    tmp_path: Path, litestream_bin: Path, replica: tuple[str, dict[str, Any], list[str]],
) -> None:
    """`asgi-litestream restore --database 'folder/*.db'` restores each tenant under its
    own name and exits 0; the non-UTF-8 one is named on stderr."""
    url, options, names = replica
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {"LITESTREAM_" + key.upper(): value for key, value in options.items()}
    result = cli("restore", "--database", f"{folder}/*.db", "--replica-url", url,
                 "--bin-path", str(litestream_bin), env=env)
    assert result.returncode == 0, result.stderr
    assert _databases(folder) == set(names)
    for name in names:
        assert _rows(folder / name) == [name], name
    if url.startswith("file:"):
        assert repr(NOT_UTF8) in result.stderr and "not valid UTF-8" in result.stderr
