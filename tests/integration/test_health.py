"""Health under a steady write load: `healthy` measures replication delay. Real
Litestream, real S3 (moto), writes flowing throughout."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, client, lifespan, notes_app, restore
from tests.proxy import Proxy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WRITE_EVERY = 0.05  # each of two writers: one small commit every 50 ms


@asynccontextmanager
async def steady_writes(http: httpx.AsyncClient, written: list[str]) -> AsyncIterator[None]:
    """Two clients, each committing one small row every 50 ms, until the block ends."""
    stop = anyio.Event()

    async def writer(name: str) -> None:
        while not stop.is_set():
            body = f"{name}-{len(written)}"
            response = await http.post("/notes", json={"body": body})
            assert response.status_code == 201, response.text
            written.append(body)
            await anyio.sleep(WRITE_EVERY)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer, "a")
        tg.start_soon(writer, "b")
        try:
            yield
        finally:
            stop.set()


async def sample(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    strict = await http.get("/_litestream/status?strict=1")
    return strict.status_code, strict.json()


async def until(http: httpx.AsyncClient, predicate: Callable[[int, dict[str, Any]], bool],
                timeout: float, what: str) -> float:
    """Seconds until ``predicate(strict code, body)`` holds; fails past ``timeout``."""
    started = time.monotonic()
    with anyio.fail_after(timeout):
        while not predicate(*await sample(http)):
            await anyio.sleep(0.05)
    return time.monotonic() - started


async def test_steady_write_load_stays_healthy(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Two clients committing every 50 ms for 20 s: healthy within two polls of start,
    then strict 200 at every sample, and every row is in the replica."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             health_interval=0.5, max_lag=3, public_details=True)
    written: list[str] = []
    unhealthy: list[tuple[float, dict[str, Any]]] = []
    async with lifespan(app) as state, client(app, state) as http:
        async with steady_writes(http, written):
            await until(http, lambda code, _: code == 200, 1.5, "healthy within two polls")
            started = time.monotonic()
            worst = 0.0
            while time.monotonic() - started < 20:
                code, body = await sample(http)
                database = body["databases"][0]
                worst = max(worst, database["behind_s"] or 0.0)
                if code != 200:
                    unhealthy.append((time.monotonic() - started, database))
                await anyio.sleep(0.1)
        print(f"{len(written)} rows; worst behind_s {worst:.2f}s")  # noqa: T201
    assert unhealthy == []
    assert len(written) > 300  # the load really flowed
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written


async def test_hung_replica_under_load_turns_unhealthy_logs_it_and_recovers(
    tmp_path: Path, litestream_bin: Path, s3: S3, s3_behind_proxy: tuple[S3, Proxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S3 hangs (accepts, never answers) under a steady load: strict turns 503 within
    max_lag plus a poll, a warning names the stall; once S3 answers again strict is
    200 within a few seconds and a line says it recovered; no acknowledged row is lost."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    via_proxy, proxy = s3_behind_proxy
    db = tmp_path / "app.db"
    max_lag, poll = 3.0, 0.5
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=via_proxy.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             health_interval=poll, max_lag=max_lag, flush_timeout=30)
    written: list[str] = []
    async with lifespan(app) as state, client(app, state) as http:
        async with steady_writes(http, written):
            await until(http, lambda code, _: code == 200, 5, "healthy at first")
            await anyio.sleep(2)
            proxy.set_mode("hang")
            down_after = await until(http, lambda code, _: code == 503, max_lag + 3 * poll,
                                     "strict 503 once the replica hangs")
            # Readiness stays up: the app works, only the backup is behind.
            assert (await http.get("/_litestream/status")).status_code == 200
            await anyio.sleep(5)
            proxy.set_mode("pass")
            up_after = await until(http, lambda code, _: code == 200, 10,
                                   "strict 200 once S3 answers again")
            await anyio.sleep(2)
            assert (await sample(http))[0] == 200
        print(f"unhealthy {down_after:.1f}s after the hang, "  # noqa: T201
              f"healthy {up_after:.1f}s after S3 came back; {len(written)} rows")
    messages = [r.getMessage() for r in caplog.records]
    stalled = [m for m in messages if "is stalled" in m]
    recovered = [m for m in messages if "recovered after" in m]
    assert len(stalled) == 1 and str(db) in stalled[0], messages
    assert via_proxy.bucket in stalled[0] and s3.secret_access_key not in stalled[0]
    assert len(recovered) == 1 and str(db) in recovered[0], messages
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written
