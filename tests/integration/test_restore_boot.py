"""Restore on boot never guesses: an empty replica means a fresh start, an unreadable
one means retries (each logged with the reason) and then a failed startup, with no
empty database left behind. Real Litestream, real S3 (moto)."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan, RestoreError
from tests.helpers import S3, LifespanFailed, client, lifespan, notes_app
from tests.proxy import Proxy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def app_for(db: Path, s3: S3, litestream_bin: Path, url: str, **options: object
            ) -> LitestreamLifespan:
    return LitestreamLifespan(notes_app(db), database=db, replica_url=url,
                              access_key_id=s3.access_key_id,
                              secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                              **options)  # type: ignore[arg-type]


async def fails_to_start(app: LitestreamLifespan) -> LifespanFailed:
    with pytest.raises(LifespanFailed) as failure:
        async with lifespan(app):
            pass
    return failure.value


# A missing bucket is no outage: it fails at once (test_fail_fast.py).
@pytest.mark.parametrize("how", ["hung", "refused"])
async def test_an_unreadable_replica_fails_startup_after_retries_and_leaves_nothing(
    how: str, tmp_path: Path, litestream_bin: Path, s3: S3,
    s3_behind_proxy: tuple[S3, Proxy], caplog: pytest.LogCaptureFixture,
) -> None:
    """No database, and a replica that cannot be read: each attempt is logged with the
    reason, startup fails with a RestoreError naming the replica once restore_timeout
    runs out, and no database file (empty or partial) is left."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    via_proxy, proxy = s3_behind_proxy
    proxy.set_mode("refuse" if how == "refused" else "hang")
    url = via_proxy.url()
    db = tmp_path / "app.db"
    failure = await fails_to_start(app_for(db, s3, litestream_bin, url, restore_timeout=7))
    assert isinstance(failure.error, RestoreError)
    assert "could not read the replica s3://" in failure.message
    assert s3.secret_access_key not in failure.message
    attempts = [r.getMessage() for r in caplog.records if "cannot read the replica" in
                r.getMessage()]
    # A hung attempt waits out its own 5 s: one retry fits in 7 s.
    assert len(attempts) >= (2 if how == "refused" else 1), caplog.text
    if how == "hung":
        assert "no answer within" in attempts[0]
    else:
        assert "Connection refused" in attempts[0]
    # Only the lock files, which stay beside a database by design.
    assert sorted(p.name for p in tmp_path.iterdir() if "app.db" in p.name) == [
        ".app.db.litestream-leader", ".app.db.litestream-members"]


async def test_an_empty_replica_is_a_fresh_start(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that holds nothing yet: logged, and the app starts on a new database."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    db = tmp_path / "app.db"
    app = app_for(db, s3, litestream_bin, s3.url())
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes", json={"body": "first"})).status_code == 201
    assert f"no backup of {db} in s3://{s3.bucket}/app" in caplog.text


async def test_a_replica_that_comes_back_is_restored(
    tmp_path: Path, litestream_bin: Path, s3: S3, s3_behind_proxy: tuple[S3, Proxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unreachable at first, reachable a few seconds later: startup waits, logging,
    then restores the rows."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    via_proxy, proxy = s3_behind_proxy
    db = tmp_path / "app.db"
    app = app_for(db, s3, litestream_bin, via_proxy.url())
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes/durable", json={"body": "kept"})).status_code == 201
    for leftover in tmp_path.glob("app.db*"):
        leftover.unlink()
    proxy.set_mode("refuse")

    async def bring_back() -> None:
        await anyio.sleep(3)
        proxy.set_mode("pass")

    async with anyio.create_task_group() as tg:
        tg.start_soon(bring_back)
        async with lifespan(app_for(db, s3, litestream_bin, via_proxy.url(),
                                    restore_timeout=60)) as state, client(app, state) as http:
            assert (await http.get("/notes")).json() == ["kept"]
    assert "cannot read the replica" in caplog.text
    assert f"restored {db} from" in caplog.text
