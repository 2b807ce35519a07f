"""Credentials that rotate without a restart of the app: through the call and through the
key files; real Litestream, real S3 (moto, which does not check keys: these tests prove
the mechanics: one Litestream restart per rotation, no acknowledged row lost)."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from asgi_litestream import ConfigError, LitestreamLifespan, rotate_credentials
from tests.helpers import S3, LifespanFailed, client, lifespan, notes_app, restore

pytestmark = [pytest.mark.integration]


def key_files(tmp_path: Path, key_id: str, secret: str) -> dict[str, Path]:
    """Write the two key files as a Secret volume holds them (one newline at the end)."""
    paths = {"access_key_id_file": tmp_path / "access-key-id",
             "secret_access_key_file": tmp_path / "secret-access-key"}
    paths["access_key_id_file"].write_text(key_id + "\n")
    paths["secret_access_key_file"].write_text(secret + "\n")
    return paths


@pytest.mark.anyio
async def test_rotation_under_durable_writes_loses_nothing_and_restarts_once(
        tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """Three rotations while durable writes stream in: every acknowledged row is in the
    replica, Litestream's pid changes once per rotation, `restarts` stays 0."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)
    acknowledged: list[str] = []
    pauses: list[float] = []
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        pids = [supervisor.pid]
        writing = True

        async def write() -> None:
            i = 0
            while writing:
                response = await http.post("/notes/durable", json={"body": f"row-{i}"})
                assert response.status_code == 201, response.text
                acknowledged.append(f"row-{i}")
                i += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            for n in range(3):
                await anyio.sleep(0.5)
                if n == 1:  # by name, as the seed API does
                    await rotate_credentials("litestream", access_key_id=f"AKIA-TEST-{n}",
                                             secret_access_key=f"secret-test-{n}")
                else:
                    await supervisor.rotate_credentials(access_key_id=f"AKIA-TEST-{n}",
                                                        secret_access_key=f"secret-test-{n}")
                pauses.append(supervisor.status()["credentials"]["last_pause_s"])
                pids.append(supervisor.pid)
            await anyio.sleep(0.5)
            writing = False
        status = supervisor.status()
        assert supervisor.restarts == 0 and status["restarts"] == 0
        assert status["state"] == "running"
        assert status["credentials"]["source"] == "call"
        assert "AKIA-TEST" not in str(status)
    assert len(set(pids)) == 4 and None not in pids, pids
    restored = restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env())
    print(f"{len(acknowledged)} rows acknowledged, {len(restored)} restored; "  # noqa: T201
          f"pauses (flush to running) {[round(p * 1000) for p in pauses]} ms")
    assert len(acknowledged) > 20
    assert set(acknowledged) <= set(restored)


@pytest.mark.anyio
async def test_new_key_files_are_applied_and_bad_ones_are_not(
        tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher: new keys in both files restart Litestream once with them; an empty
    file is logged and not applied; one file changed alone waits one more check."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    db = tmp_path / "app.db"
    files = key_files(tmp_path, s3.access_key_id, s3.secret_access_key)
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             bin_path=litestream_bin, health_interval=0.2, **files)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        first = supervisor.status()["credentials"]
        assert first["source"] == "file"
        pid = supervisor.pid

        async def settle(checks: int = 4) -> None:
            await anyio.sleep(0.2 * checks)

        # An empty secret (a writer that truncated it): not applied, the old keys stay.
        files["access_key_id_file"].write_text("AKIA-TEST-2\n")
        files["secret_access_key_file"].write_text("")
        await settle()
        assert supervisor.pid == pid
        assert "is empty; not applied" in caplog.text
        # Both new: applied once.
        files["secret_access_key_file"].write_text("secret-test-2\n")
        rotated = "credentials rotated (source file); Litestream restarted in"
        # The new pid shows before the rotation logs its line: wait for the line.
        with anyio.fail_after(5):
            while rotated not in caplog.text:
                await anyio.sleep(0.05)
        assert supervisor.pid != pid
        second = supervisor.status()["credentials"]
        assert second["source"] == "file" and second["loaded_at"] > first["loaded_at"]
        assert (await http.post("/notes/durable", json={"body": "after"})).status_code == 201
        # Only the secret changes (same key id): one more check, then applied.
        pid = supervisor.pid
        files["secret_access_key_file"].write_text("secret-test-3\n")
        with anyio.fail_after(5):
            while caplog.text.count(rotated) < 2:
                await anyio.sleep(0.05)
        assert supervisor.pid != pid
        assert "only one key file changed" in caplog.text
        assert supervisor.restarts == 0
    assert "secret-test" not in caplog.text
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == ["after"]


@pytest.mark.anyio
async def test_an_empty_key_file_at_startup_stops_it(
        tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """An empty key file at startup: startup fails with a ConfigError naming the file."""
    db = tmp_path / "app.db"
    files = key_files(tmp_path, "AKIA-TEST-1", "")
    files["secret_access_key_file"].write_text("")
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             bin_path=litestream_bin, **files)
    with pytest.raises(LifespanFailed) as failed:
        async with lifespan(app):
            pass
    assert isinstance(failed.value.error, ConfigError)
    assert str(files["secret_access_key_file"]) in failed.value.message
