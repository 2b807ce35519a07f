"""The README's "check your backup" recipe, run as written on a machine that sets
AWS_CA_BUNDLE. Real Litestream, real S3 (moto)."""

from __future__ import annotations

import os
import sqlite3
import ssl
import subprocess
from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, client, lifespan, notes_app

pytestmark = pytest.mark.integration


def recipe(litestream_bin: Path, s3: S3, out: Path, *, unset_ca_bundle: bool
           ) -> subprocess.CompletedProcess[str]:
    ca_bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    env = {**os.environ, "AWS_CA_BUNDLE": ca_bundle,
           "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
           "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}
    prefix = ["env", "-u", "AWS_CA_BUNDLE"] if unset_ca_bundle else []
    return subprocess.run([*prefix, str(litestream_bin), "restore", "-o", str(out), s3.url()],
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_check_recipe_works_where_aws_ca_bundle_is_set(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """`env -u AWS_CA_BUNDLE litestream restore -o ...` restores the rows; without the
    `env -u`, Litestream 0.5.17 fails as the README says (the trap the recipe avoids)."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)

    async def write() -> None:
        async with lifespan(app) as state, client(app, state) as http:
            assert (await http.post("/notes", json={"body": "checked"})).status_code == 201

    anyio.run(write)
    trapped = recipe(litestream_bin, s3, tmp_path / "trap.db", unset_ca_bundle=False)
    assert trapped.returncode != 0 and "RootCAs" in trapped.stderr, trapped.stderr
    done = recipe(litestream_bin, s3, tmp_path / "check.db", unset_ca_bundle=True)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "check.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT body FROM notes").fetchall() == [("checked",)]
