"""The metrics route: Prometheus text that prometheus_client parses, with our series and
Litestream's own, moving as they should. Real Litestream, real servers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from asgi_litestream import LitestreamLifespan
from asgi_litestream.prometheus import LitestreamCollector
from tests.helpers import S3, client, lifespan, notes_app
from tests.integration.servers import start_server, statuses_of_all_workers

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[str, float]:
    """``{"name{label=value,...}": value}`` of every sample, as prometheus_client parses it."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k not in ("name", "db"))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    response = await http.get("/_litestream/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def until(http: httpx.AsyncClient, name: str, value: float, timeout: float = 10
                ) -> dict[str, float]:
    with anyio.fail_after(timeout):
        while (found := await metrics(http)).get(name) != value:
            await anyio.sleep(0.1)
    return found


@pytest.mark.anyio
async def test_metrics_parse_and_move_with_a_crash_and_a_durable_write(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Ours and Litestream's series parse; a SIGKILL adds a restart, a durable write
    adds a sync round and a caller; no secret appears."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             health_interval=0.2, public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes", json={"body": "one"})).status_code == 201
        before = await until(http, "asgi_litestream_up", 1)
        with anyio.fail_after(10):  # Litestream's own series arrive with a scrape
            while "litestream_db_size" not in (before := await metrics(http)):
                await anyio.sleep(0.1)
        assert before["asgi_litestream_state{state=running}"] == 1
        assert before["asgi_litestream_role{role=leader}"] == 1
        assert before["asgi_litestream_restarts_total"] == 0
        assert before["asgi_litestream_txid"] >= 1

        os.kill(state["litestream"].pid, signal.SIGKILL)
        after_kill = await until(http, "asgi_litestream_restarts_total", 1)
        assert after_kill["asgi_litestream_last_exit_code"] == -signal.SIGKILL

        assert (await http.post("/notes/durable", json={"body": "two"})).status_code == 201
        after = await metrics(http)
        assert after["asgi_litestream_durable_sync_rounds_total"] == (
            before["asgi_litestream_durable_sync_rounds_total"] + 1)
        assert after["asgi_litestream_durable_sync_seconds_count"] == 1
        assert after["asgi_litestream_durable_sync_failures_total"] == 0
        text = (await http.get("/_litestream/metrics")).text
        assert s3.secret_access_key not in text and s3.access_key_id not in text
        assert "go_goroutines" not in text  # Litestream's Go runtime stays out

        registry = CollectorRegistry()
        registry.register(LitestreamCollector())
        assert b"asgi_litestream_restarts_total" in generate_latest(registry)


def test_every_worker_tells_the_truth(tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """uvicorn --workers 2: both workers' metrics say up, with the same Litestream
    series (the standby scrapes the leader's Litestream)."""
    env = {"ASGI_LITESTREAM_DATABASE": str(tmp_path / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": s3.url(),
           "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
           "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.2",
           "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
           "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}
    server = start_server("uvicorn", tmp_path, env, workers=2)
    try:
        statuses_of_all_workers(server, 2)
        server.post_note("one")
        seen: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            found = samples(server.get("/_litestream/metrics").text)
            role = "leader" if found.get("asgi_litestream_role{role=leader}") else "standby"
            if found.get("asgi_litestream_up") == 1 and "litestream_db_size" in found:
                seen[role] = found
        assert sorted(seen) == ["leader", "standby"], server.output()
    finally:
        server.stop()
