"""Credentials against an S3 that checks them (moto with its IAM enforced, tests/iam.py):
rotation under a steady write load, through the key files and through the call, then
the old key revoked; and a revoked key nobody replaced, seen as `credentials: rejected`.
Real Litestream throughout."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import httpx
import pytest

from asgi_litestream import LitestreamLifespan, rotate_credentials
from tests.helpers import S3, client, lifespan, notes_app, restore
from tests.iam import IamMoto, Key

pytestmark = [pytest.mark.integration]


def signed_by(store: S3, key: Key) -> S3:
    return S3(endpoint=store.endpoint, bucket=store.bucket, access_key_id=key.access_key_id,
              secret_access_key=key.secret_access_key)


class Writer:
    """Durable writes, one after another, until stopped; every answer must be 201."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.acknowledged: list[str] = []
        self.writing = True

    async def run(self) -> None:
        i = 0
        while self.writing:
            response = await self.http.post("/notes/durable", json={"body": f"row-{i}"})
            assert response.status_code == 201, response.text
            self.acknowledged.append(f"row-{i}")
            i += 1


@pytest.mark.anyio
@pytest.mark.parametrize("through", ["files", "call"])
async def test_rotation_then_revocation_under_writes_loses_nothing(
        through: str, tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto) -> None:
    """Start on key 1 (the lease on too: its calls are signed), write steadily, rotate
    to key 2, revoke key 1: writing goes on, the lease stays held, Litestream restarted
    once (not counted as a restart), and the replica holds every acknowledged row."""
    user, (key1, key2) = moto_iam.user_with_keys(2)
    store = moto_iam.bucket(key1)
    db = tmp_path / "app.db"
    files = {"access_key_id_file": tmp_path / "key-id",
             "secret_access_key_file": tmp_path / "secret"}
    options: dict[str, object] = dict(files) if through == "files" else {
        "access_key_id": key1.access_key_id, "secret_access_key": key1.secret_access_key}
    files["access_key_id_file"].write_text(key1.access_key_id + "\n")
    files["secret_access_key_file"].write_text(key1.secret_access_key + "\n")
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=store.url(),
                             bin_path=litestream_bin, lease=True, lease_ttl=3,
                             health_interval=0.2, **options)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        with anyio.fail_after(10):  # with lease=True, the gate opens once it is held
            while supervisor.state.value != "running":
                await anyio.sleep(0.05)
        first_pid = supervisor.pid
        writer = Writer(http)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            await anyio.sleep(1)
            if through == "files":
                before = supervisor.status()["credentials"]["loaded_at"]
                files["access_key_id_file"].write_text(key2.access_key_id + "\n")
                files["secret_access_key_file"].write_text(key2.secret_access_key + "\n")
                with anyio.fail_after(10):  # the watcher looks every health_interval
                    while (supervisor.status()["credentials"]["loaded_at"] == before
                           or supervisor.state.value != "running"):
                        await anyio.sleep(0.05)
            else:
                await supervisor.rotate_credentials(access_key_id=key2.access_key_id,
                                                    secret_access_key=key2.secret_access_key)
            second_pid = supervisor.pid
            moto_iam.revoke(user, key1)
            await anyio.sleep(3)  # a lease renewal (every lease_ttl / 3) and syncs on key 2
            writer.writing = False
        status = supervisor.status()
        assert second_pid not in (None, first_pid) and supervisor.pid == second_pid
        assert status["restarts"] == 0 and status["state"] == "running"
        assert status["credentials"]["state"] == "ok", status["credentials"]
        assert status["credentials"]["source"] == ("file" if through == "files" else "call")
        assert status["lease"]["role"] == "holder", status["lease"]
        assert status["healthy"] is True
    assert len(writer.acknowledged) > 20
    restored = restore(litestream_bin, store.url(), tmp_path / "out.db",
                       env=signed_by(store, key2).env())
    assert set(writer.acknowledged) <= set(restored)


@pytest.mark.anyio
async def test_a_revoked_key_shows_rejected_within_max_lag_and_a_rotation_mends_it(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        caplog: pytest.LogCaptureFixture) -> None:
    """Key 1 revoked with nobody rotating: within max_lag the status says
    `credentials: rejected` (and since when), health and readiness turn, one error line
    names the source and the fix. The rotation to key 2 clears it at once, and the rows
    written meanwhile reach the replica."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    user, (key1, key2) = moto_iam.user_with_keys(2)
    store = moto_iam.bucket(key1)
    db = tmp_path / "app.db"
    max_lag = 5.0
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=store.url(),
                             bin_path=litestream_bin, access_key_id=key1.access_key_id,
                             secret_access_key=key1.secret_access_key, max_lag=max_lag,
                             health_interval=0.2, strict_status=True)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        assert (await http.post("/notes/durable", json={"body": "before"})).status_code == 201
        moto_iam.revoke(user, key1)
        revoked = time.monotonic()
        written = ["before"]
        with anyio.fail_after(max_lag + 5):
            while supervisor.status()["credentials"]["state"] != "rejected":
                body = f"during-{len(written)}"
                assert (await http.post("/notes", json={"body": body})).status_code == 201
                written.append(body)
                await anyio.sleep(0.1)
        seen_after = time.monotonic() - revoked
        print(f"rejected seen {seen_after:.2f} s after the revocation")  # noqa: T201
        status = supervisor.status()
        assert seen_after <= max_lag, seen_after
        assert status["credentials"]["rejected_since"] is not None
        assert status["credentials"]["problem"] == (
            "the access key id is not known to the storage")
        assert status["healthy"] is False
        probe = await http.get("/_litestream/status")
        assert probe.status_code == 503
        metrics = supervisor.metrics()
        assert 'asgi_litestream_credentials_rejected{name="litestream"} 1' in metrics
        said = [r for r in caplog.records if "refuses the S3 keys" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.ERROR
        assert "source option" in said[0].getMessage()
        assert "rotate_credentials()" in said[0].getMessage()
        # The fix: new keys. Cleared at once; health comes back as the replica catches up.
        await supervisor.rotate_credentials(access_key_id=key2.access_key_id,
                                            secret_access_key=key2.secret_access_key)
        assert supervisor.status()["credentials"]["state"] == "ok"
        assert (await http.post("/notes/durable", json={"body": "after"})).status_code == 201
        written.append("after")
        with anyio.fail_after(10):
            while supervisor.status()["healthy"] is not True:
                await anyio.sleep(0.1)
        assert (await http.get("/_litestream/status")).status_code == 200
        assert supervisor.status()["credentials"]["state"] == "ok"
    assert key1.secret_access_key not in caplog.text
    assert key2.secret_access_key not in caplog.text
    restored = restore(litestream_bin, store.url(), tmp_path / "out.db",
                       env=signed_by(store, key2).env())
    assert restored == written


@pytest.mark.anyio
async def test_temporary_keys_rotate_with_their_token_and_a_stale_token_is_dropped(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Start on a role's temporary keys (their token in AWS_SESSION_TOKEN, as a platform
    hands them over); rotate to a user's key without a token: the old token goes (moto,
    like AWS, refuses a user's key sent with one); rotate to new temporary keys with
    their session_token: it is used. Writes go on throughout and reach the replica."""
    _, (key,) = moto_iam.user_with_keys(1)
    role = moto_iam.role()
    first, second = moto_iam.assume(role), moto_iam.assume(role)
    store = moto_iam.bucket()
    monkeypatch.setenv("AWS_SESSION_TOKEN", first["SessionToken"])
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=store.url(),
                             bin_path=litestream_bin, access_key_id=first["AccessKeyId"],
                             secret_access_key=first["SecretAccessKey"], health_interval=0.2)
    written: list[str] = []

    async def write(body: str) -> None:
        response = await http.post("/notes/durable", json={"body": body})
        assert response.status_code == 201, response.text
        written.append(body)

    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        await write("temporary")
        await supervisor.rotate_credentials(access_key_id=key.access_key_id,
                                            secret_access_key=key.secret_access_key)
        await write("permanent")
        await supervisor.rotate_credentials(access_key_id=second["AccessKeyId"],
                                            secret_access_key=second["SecretAccessKey"],
                                            session_token=second["SessionToken"])
        await write("temporary again")
        status = supervisor.status()
        assert status["credentials"]["state"] == "ok" and status["restarts"] == 0
        assert second["SessionToken"] not in str(status)
    for secret in (first["SessionToken"], second["SessionToken"], key.secret_access_key):
        assert secret not in caplog.text
    assert "refuses the S3 keys" not in caplog.text
    env = signed_by(store, key).env()
    del env["AWS_SESSION_TOKEN"]  # the restore signs with the user's key
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == written


@pytest.mark.anyio
async def test_a_read_replicas_revoked_key_shows_rejected_and_a_rotation_mends_it(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        caplog: pytest.LogCaptureFixture) -> None:
    """A follower's key revoked: its status says `credentials: rejected` with one error
    line naming the source; rotating it by name clears that, and rows the primary
    writes afterwards reach the copies."""
    from tests.integration.test_rotate_follower_credentials import (
        caught_up,
        follower_of,
        primary_of,
        write_everywhere,
    )

    caplog.set_level(logging.INFO, "asgi_litestream")
    _, (primary_key,) = moto_iam.user_with_keys(1)
    user, (key1, key2) = moto_iam.user_with_keys(2)
    store = moto_iam.bucket(primary_key)
    primary, dbs = primary_of(tmp_path, store, litestream_bin)
    follower, _ = follower_of(tmp_path, store, litestream_bin,
                              access_key_id=key1.access_key_id,
                              secret_access_key=key1.secret_access_key)
    async with lifespan(primary) as p_state:
        await p_state["litestream"].sync()
        async with lifespan(follower) as f_state, client(follower, f_state) as http:
            replica = f_state["litestream"]
            await caught_up(http, [3, 3])
            moto_iam.revoke(user, key1)
            await write_everywhere(p_state, dbs, 1)
            with anyio.fail_after(15):
                while replica.status()["credentials"]["state"] != "rejected":
                    await anyio.sleep(0.1)
            said = [r.getMessage() for r in caplog.records
                    if "refuses the S3 keys" in r.getMessage()]
            assert len(said) == 1 and "'follower'" in said[0] and "source option" in said[0]
            assert 'asgi_litestream_credentials_rejected{name="follower"} 1' in (
                replica.metrics())
            await rotate_credentials("follower", access_key_id=key2.access_key_id,
                                     secret_access_key=key2.secret_access_key)
            assert replica.status()["credentials"]["state"] == "ok"
            await write_everywhere(p_state, dbs, 1)
            await caught_up(http, [5, 5])
            assert replica.status()["credentials"]["state"] == "ok"
    assert key2.secret_access_key not in caplog.text
