"""New S3 keys on a read replica, without the real binary: each follower's `restore -f`
starts again once with them, uncounted, its copy in place throughout, and the new
secret scrubbed from its lines (the real binary: tests/integration/
test_rotate_follower_credentials.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import pytest

from asgi_litestream import ConfigError
from asgi_litestream._config.databases import Database
from asgi_litestream._config.settings import Settings
from asgi_litestream._follower.credentials import FollowerCredentials
from asgi_litestream._follower.group import FollowerSet
from asgi_litestream._litestream.logs import LitestreamLog
from tests.follower.test_follower import FAKE_PREFIX, fake_binary, fake_env, make_wal_database

# Says which keys it runs with (and, as a careless Litestream might, its secret);
# refuses to resume over a copy, restores a fresh one and follows it until stopped.
KEYED = FAKE_PREFIX + """\
with open(os.environ["FAKE_KEYS"], "a") as keys:
    keys.write(os.environ.get("LITESTREAM_ACCESS_KEY_ID", "-") + "\\n")
secret = os.environ.get("LITESTREAM_SECRET_ACCESS_KEY", "-")
print(f'time=2026-01-01T00:00:00Z level=WARN msg="signing with {secret}"', flush=True)
if os.path.exists(out):
    print("Error: cannot resume follow mode: saved TXID 0000000000000009 is ahead of "
          "latest snapshot (max TXID 0000000000000001); delete it", flush=True)
    sys.exit(1)
with open(os.environ["FAKE_SOURCE"], "rb") as src, open(out, "wb") as dst:
    dst.write(src.read())
log("entering follow mode", output=out, txid="000000000000000a")
time.sleep(60)
"""


def keyed_followers(tmp_path: Path, copies: int = 2) -> FollowerSet:
    make_wal_database(tmp_path / "source.db", rows=3)
    env = {**fake_env(tmp_path), "FAKE_KEYS": str(tmp_path / "keys"),
           "LITESTREAM_ACCESS_KEY_ID": "AKIA-OLD", "LITESTREAM_SECRET_ACCESS_KEY": "sec-old"}
    databases = [Database(path=tmp_path / f"c{i}.db", replica_url=f"s3://bucket/c{i}")
                 for i in range(copies)]
    return FollowerSet(fake_binary(tmp_path, KEYED), databases, env=env,
                       log=LitestreamLog(["sec-old"]), secrets=["sec-old"])


def keys_used(tmp_path: Path) -> list[str]:
    return (tmp_path / "keys").read_text().splitlines()


@pytest.mark.anyio
async def test_new_keys_start_each_follower_again_once_uncounted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """use_env: every running `restore -f` is stopped and started again with the new
    keys (a fresh copy, as Litestream will not resume), not counted as a restart, ready
    all along; the new secret never reaches the log."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    followers = keyed_followers(tmp_path)
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            assert await followers.wait_ready(10)
            before = [f.pid for f in followers.followers]
            assert None not in before and keys_used(tmp_path) == ["AKIA-OLD"] * 2
            restarted = await followers.use_env(
                {"LITESTREAM_ACCESS_KEY_ID": "AKIA-NEW",
                 "LITESTREAM_SECRET_ACCESS_KEY": "sec-new"}, secrets=["AKIA-NEW", "sec-new"])
            assert restarted == 2
            deadline = time.monotonic() + 10
            while any(f.generation < 2 for f in followers.followers):
                assert all(f.ready for f in followers.followers)
                assert time.monotonic() < deadline, followers.snapshot()
                await anyio.sleep(0.01)
            statuses = followers.snapshot()
        finally:
            await followers.close()
    assert all(s["restarts"] == 0 and s["ready"] for s in statuses)
    assert all(s["pid"] not in (None, *before) for s in statuses)
    # Per copy: the first run, the refused resume, the fresh copy; no more.
    assert sorted(keys_used(tmp_path)) == ["AKIA-NEW"] * 4 + ["AKIA-OLD"] * 2
    assert "signing with ***" in caplog.text
    assert "sec-new" not in caplog.text and "sec-old" not in caplog.text
    assert "exited with code" not in caplog.text


@pytest.mark.anyio
async def test_new_keys_with_nothing_running_wait_for_the_next_start(tmp_path: Path) -> None:
    """No `restore -f` runs (not started yet): nothing is restarted; the next one
    starts with the new keys."""
    followers = keyed_followers(tmp_path, copies=1)
    assert await followers.use_env({"LITESTREAM_ACCESS_KEY_ID": "AKIA-NEW"}) == 0
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            assert await followers.wait_ready(10)
        finally:
            await followers.close()
    assert keys_used(tmp_path) == ["AKIA-NEW"]


@pytest.mark.anyio
async def test_a_replicas_rotation_refuses_an_empty_key_and_shows_no_key(
    tmp_path: Path,
) -> None:
    """FollowerCredentials: an empty key is a ConfigError (nothing changes); a rotation
    moves source and loaded_at; the status shows no key."""
    settings = Settings.from_options(environ={}, database=tmp_path / "c0.db",
                                     replica_url="s3://bucket/c0", role="follower",
                                     access_key_id="AKIA-OLD", secret_access_key="sec-old")
    credentials = FollowerCredentials(settings, keyed_followers(tmp_path, copies=1))
    first = credentials.to_json()
    assert first["source"] == "option"
    with pytest.raises(ConfigError, match="secret_access_key"):
        await credentials.rotate("AKIA-NEW", " ")
    assert credentials.to_json() == first and credentials.rotations == 0
    await anyio.sleep(0.002)
    await credentials.rotate("AKIA-NEW", "sec-new")
    second = credentials.to_json()
    assert set(second) == {"source", "loaded_at", "state", "rejected_since", "problem",
                           "rotations", "last_pause_s"}  # a primary's shape
    assert second["source"] == "call" and second["rotations"] == 1
    assert "AKIA-NEW" not in str(second) and "sec-new" not in str(second)
    assert second["loaded_at"] > first["loaded_at"] and credentials.rotations == 1


# Refuses a key it does not know, as S3 does, before any copy exists.
REFUSING = KEYED.replace(
    'secret = os.environ.get("LITESTREAM_SECRET_ACCESS_KEY", "-")',
    'secret = os.environ.get("LITESTREAM_SECRET_ACCESS_KEY", "-")\n'
    'if os.environ.get("LITESTREAM_ACCESS_KEY_ID") == "AKIA-NOT-YET":\n'
    '    print("Error: operation error S3: ListObjectsV2, api error InvalidAccessKeyId: '
    'The AWS Access Key Id you provided does not exist in our records.", flush=True)\n'
    '    sys.exit(1)')


@pytest.mark.anyio
async def test_a_follower_that_gave_up_on_its_keys_follows_again_with_new_ones(
    tmp_path: Path,
) -> None:
    """A first restore refused for its key gives up at once (no restart mends a key);
    new keys (a rotation) make it follow again, and its copy comes."""
    make_wal_database(tmp_path / "source.db", rows=3)
    env = {**fake_env(tmp_path), "FAKE_KEYS": str(tmp_path / "keys"),
           "LITESTREAM_ACCESS_KEY_ID": "AKIA-NOT-YET", "LITESTREAM_SECRET_ACCESS_KEY": "sec-test"}
    followers = FollowerSet(fake_binary(tmp_path, REFUSING),
                            [Database(path=tmp_path / "c0.db", replica_url="s3://bucket/c0")],
                            env=env, log=LitestreamLog(["sec-test"]), secrets=["sec-test"])
    follower = followers.followers[0]
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            with anyio.fail_after(10):
                while follower.status().error is None:
                    await anyio.sleep(0.02)
            assert "access key id is not known" in (follower.status().error or "")
            assert await followers.use_env({"LITESTREAM_ACCESS_KEY_ID": "AKIA-NOW"}) == 1
            assert await followers.wait_ready(10)
            assert "not known" not in (follower.status().error or "")  # gave up no more
            assert follower.ready
            assert keys_used(tmp_path)[-1] == "AKIA-NOW"
        finally:
            await followers.close()
