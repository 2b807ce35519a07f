"""A primary and a read replica as two real server processes: rows written on the
primary are read on the follower, read-your-writes holds, readiness flips as
documented, the follower survives SIGKILLs and never adds an object to the replica.
Real uvicorn, real Litestream, real S3 (moto)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import S3, descendants, is_litestream
from tests.integration.servers import Server, start_server
from tests.proxy import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REPLICA_APP = "tests.integration.replica_server:app"


def env_for(folder: Path, s3: S3, **extra: str) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    return {"ASGI_LITESTREAM_DATABASE": str(folder / "app.db"),
            "ASGI_LITESTREAM_REPLICA_URL": s3.url(),
            "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
            "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
            "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.5", **extra}


def follower_status(server: Server) -> tuple[int, dict[str, Any]] | None:
    try:
        response = server.get("/_litestream/status")
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def until(check: Any, what: str, server: Server, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s\n{server.output()}")


def objects(s3: S3) -> list[tuple[str, str]]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=s3.access_key_id,
                          aws_secret_access_key=s3.secret_access_key)
    found = client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    return sorted((o["Key"], o["ETag"]) for o in found)


def test_a_follower_serves_the_primarys_rows_and_never_writes_the_replica(
    tmp_path: Path, s3: S3,
) -> None:
    """Readiness 503 until the first restore, then 200; rows written on the primary
    are read on the follower (read-your-writes with the primary's position header);
    a write on the follower fails loudly; the follower outlives a SIGKILL of its
    Litestream and of itself; it adds no object to the replica."""
    # The copy has another file name than the primary's database: positions name the
    # replica, which both share.
    follower_env = env_for(tmp_path / "replica", s3, ASGI_LITESTREAM_ROLE="follower",
                           ASGI_LITESTREAM_DATABASE=str(tmp_path / "replica" / "copy.db"))
    follower = start_server("uvicorn", tmp_path / "replica", follower_env, wait=False,
                            app=REPLICA_APP)
    primary: Server | None = None
    try:
        # No backup yet: the follower serves, but is not ready.
        waiting = until(lambda: follower_status(follower), "follower answers", follower)
        assert waiting[0] == 503 and waiting[1]["ready"] is False
        primary = start_server("uvicorn", tmp_path / "primary", env_for(
            tmp_path / "primary", s3))
        acknowledged = []
        for i in range(5):
            response = httpx.post(primary.base + "/notes/durable", json={"body": f"n{i}"},
                                  timeout=10)
            assert response.status_code == 201, response.text
            acknowledged.append(f"n{i}")
        ready = until(lambda: (s := follower_status(follower)) and s[0] == 200 and s,
                      "follower ready", follower)
        assert ready[1]["role"] == "follower" and ready[1]["healthy"] is True
        # Read your writes: the position of a durable write, carried by the client.
        write = httpx.post(primary.base + "/notes/durable", json={"body": "mine"},
                           timeout=10).json()
        acknowledged.append("mine")
        header = {"litestream-position": write["position"]}
        assert "app.db" not in write["position"]
        seen = httpx.get(follower.base + "/notes?wait=10", headers=header, timeout=20)
        assert seen.status_code == 200 and seen.json() == acknowledged
        stale = 0  # each read right after its write: none may miss the write
        for i in range(10):
            write = httpx.post(primary.base + "/notes/durable", json={"body": f"r{i}"},
                               timeout=10).json()
            acknowledged.append(f"r{i}")
            seen = httpx.get(follower.base + "/notes?wait=10", timeout=20,
                             headers={"litestream-position": write["position"]})
            stale += seen.json() != acknowledged
        assert stale == 0
        key = write["position"].partition("=")[0]
        ahead = {"litestream-position": f"{key}=999999"}
        refused = httpx.get(follower.base + "/notes?wait=0.2", headers=ahead, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        other = {"litestream-position": "0123456789ab=1"}  # a database not followed here
        refused = httpx.get(follower.base + "/notes?wait=0.2", headers=other, timeout=10)
        assert refused.status_code == 503 and "does not follow" in refused.text
        bad = {"litestream-position": f"{key}=\u00b2".encode("latin-1")}
        assert httpx.get(follower.base + "/notes", headers=bad, timeout=10).status_code == 400
        # Writing on a follower is the app's mistake: it fails, nothing diverges.
        mistake = httpx.post(follower.base + "/notes", timeout=10)
        assert mistake.status_code == 500
        assert "attempt to write a readonly database" in mistake.json()["error"]
        # SIGKILL the follower's Litestream: restarted, and it catches up.
        (child,) = [p for p in descendants(follower.process.pid) if is_litestream(p)]
        os.kill(child, signal.SIGKILL)
        httpx.post(primary.base + "/notes/durable", json={"body": "after kill"}, timeout=10)
        acknowledged.append("after kill")
        until(lambda: httpx.get(follower.base + "/notes", timeout=10).json() == acknowledged,
              "caught up after SIGKILL", follower)
        assert follower_status(follower)[1]["restarts"] >= 1  # type: ignore[index]
        # SIGKILL the follower itself; a new one over the same copy catches up.
        follower.stop(signal.SIGKILL)
        httpx.post(primary.base + "/notes/durable", json={"body": "after crash"}, timeout=10)
        acknowledged.append("after crash")
        follower = start_server("uvicorn", tmp_path / "replica", follower_env, wait=False,
                                app=REPLICA_APP)
        until(lambda: (s := follower_status(follower)) and s[0] == 200, "follower back",
              follower)
        until(lambda: httpx.get(follower.base + "/notes", timeout=10).json() == acknowledged,
              "caught up after a crash", follower)
        # The primary stops: its final flush is the replica's last change; the
        # follower, running alone, adds nothing.
        primary.stop()
        primary = None
        before = objects(s3)
        time.sleep(3)
        assert objects(s3) == before
    finally:
        follower.stop(signal.SIGTERM)
        if primary is not None:
            primary.stop(signal.SIGKILL)


def test_a_follower_cut_off_from_the_replica_turns_unready_and_back(
    tmp_path: Path, s3: S3, s3_behind_proxy: tuple[S3, Proxy],
) -> None:
    """Readiness follows the copy's lag: the follower's S3 hangs while the primary
    writes on → 503 once the copy is more than max_lag behind; S3 back → 200 with
    every row."""
    via_proxy, proxy = s3_behind_proxy
    primary = start_server("uvicorn", tmp_path / "primary", env_for(tmp_path / "primary", s3))
    follower_env = env_for(tmp_path / "replica", via_proxy, ASGI_LITESTREAM_ROLE="follower",
                           ASGI_LITESTREAM_MAX_LAG="3")
    follower = start_server("uvicorn", tmp_path / "replica", follower_env, wait=False,
                            app=REPLICA_APP)
    try:
        written = []

        def write(body: str) -> None:
            response = httpx.post(primary.base + "/notes/durable", json={"body": body},
                                  timeout=10)
            assert response.status_code == 201, response.text
            written.append(body)

        write("first")
        until(lambda: (s := follower_status(follower)) and s[0] == 200, "ready", follower)
        proxy.set_mode("hang")
        deadline = time.monotonic() + 30
        while (s := follower_status(follower)) and s[0] == 200:
            assert time.monotonic() < deadline, follower.output()
            write(f"row-{len(written)}")
            time.sleep(0.2)
        assert s is not None and s[1]["healthy"] is False and s[1]["ready"] is True
        proxy.set_mode("pass")
        until(lambda: (s := follower_status(follower)) and s[0] == 200, "ready again",
              follower, timeout=60)
        until(lambda: httpx.get(follower.base + "/notes", timeout=10).json() == written,
              "caught up", follower)
    finally:
        proxy.set_mode("pass")
        follower.stop(signal.SIGTERM)
        primary.stop(signal.SIGTERM)
