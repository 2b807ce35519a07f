"""Several workers, real servers: one Litestream per database, takeover, no orphans,
restore on boot. Real Litestream, real S3 (moto)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import S3, descendants, is_litestream, litestreams_replicating, restore
from tests.integration.servers import (
    Server,
    start_server,
    statuses_of_all_workers,
    wait_until_running,
)

pytestmark = pytest.mark.integration


def server_env(db: Path, s3: S3, litestream_bin: Path, **extra: str) -> dict[str, str]:
    return {
        "ASGI_LITESTREAM_DATABASE": str(db),
        "ASGI_LITESTREAM_REPLICA_URL": s3.url(),
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.2",
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
        **extra,
    }


def stopped_cleanly(server: Server) -> None:
    """Graceful stop; uvicorn without --workers re-raises SIGTERM once shut down."""
    assert server.stop() in (0, -signal.SIGTERM), server.output()
    assert "final flush complete" in server.output(), server.output()


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def post_as_a_client_would(server: Server, body: str) -> None:
    """POST a note; a 503 with Retry-After (a worker uvicorn started to replace the
    dead one, behind the gate while it joins: lease=True) is retried, as a client or a
    load balancer would. Anything else must be a 201."""
    deadline = time.monotonic() + 15
    while True:
        response = httpx.post(server.base + "/notes", json={"body": body}, timeout=10,
                              headers={"connection": "close"})
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        assert response.headers.get("retry-after") == "1", response.headers
        time.sleep(0.1)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn"])
def test_workers_share_one_litestream_and_lose_nothing(
    kind: str, tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """--workers 3: exactly one Litestream; every worker reports the same leader and
    pid; after a graceful stop every row written through any worker is in the replica."""
    db = tmp_path / "app.db"
    server = start_server(kind, tmp_path, server_env(db, s3, litestream_bin), workers=3)
    written: list[str] = []
    try:
        statuses = statuses_of_all_workers(server, 3)
        assert len(litestreams_replicating(db)) == 1
        assert len({s["leader_pid"] for s in statuses.values()}) == 1
        assert sorted(s["role"] for s in statuses.values()) == ["leader", "standby", "standby"]
        assert all(s["status"] == "running" for s in statuses.values())
        assert len({s["pid"] for s in statuses.values()}) == 1  # the one Litestream
        workers_used = set()
        for i in range(60):
            written.append(f"row-{i}")
            workers_used.add(server.post_note(written[-1])["worker"])
        assert len(workers_used) >= 2
    finally:
        server.stop()
    assert server.process.returncode == 0, server.output()
    assert litestreams_replicating(db) == []
    assert server.output().count("final flush complete") == 1, server.output()
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written


@pytest.mark.parametrize("lease", [False, True])
def test_a_standby_takes_over_when_the_leading_worker_dies(
    lease: bool, tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """SIGKILL of the leading uvicorn worker: its Litestream exits, a standby runs the
    only Litestream within 5 s, and rows written before and after are all replicated.
    With lease=True too: the dead worker's lease (30 s) is taken over at once, since
    the standby holds the host's flock the dead worker held (same kernel)."""
    db = tmp_path / "app.db"
    env = server_env(db, s3, litestream_bin)
    if lease:
        env["ASGI_LITESTREAM_LEASE"] = "1"
    server = start_server("uvicorn", tmp_path, env, workers=3)
    written: list[str] = []
    try:
        leader = statuses_of_all_workers(server, 3).popitem()[1]["leader_pid"]
        for i in range(20):
            written.append(f"before-{i}")
            server.post_note(written[-1])
        (old_litestream,) = litestreams_replicating(db)
        os.kill(leader, signal.SIGKILL)
        killed_at = time.monotonic()
        new = wait_for(lambda: [p for p in litestreams_replicating(db) if p != old_litestream],
                       5, "a standby runs Litestream")
        takeover = time.monotonic() - killed_at
        wait_for(lambda: not is_litestream(old_litestream), 2, "the orphan exits")
        assert litestreams_replicating(db) == new
        print(f"takeover in {takeover * 1000:.0f} ms")  # noqa: T201
        for i in range(20):
            written.append(f"after-{i}")
            post_as_a_client_would(server, written[-1])
        after = wait_until_running(server)
        assert after["leader_pid"] != leader
        if lease:
            assert after["lease"]["role"] == "holder"
            assert "took over the lease" in server.output()
    finally:
        server.stop()
    assert server.process.returncode == 0, server.output()
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == written


def test_sigkilled_app_leaves_no_litestream(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """SIGKILL of the app process: its Litestream child exits within 2 s."""
    db = tmp_path / "app.db"
    server = start_server("uvicorn", tmp_path, server_env(db, s3, litestream_bin))
    try:
        server.post_note("x")
        (child,) = [p for p in descendants(server.process.pid) if is_litestream(p)]
        server.process.kill()
        killed_at = time.monotonic()
        server.process.wait(10)
        wait_for(lambda: not is_litestream(child), 2, "the orphaned Litestream exits")
        print(f"orphan exited {1000 * (time.monotonic() - killed_at):.0f} ms after SIGKILL")  # noqa: T201
    finally:
        server.stop(signal.SIGKILL)


def test_empty_volume_restores_before_the_app_starts_once_across_workers(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """A lost disk: the database comes back from the replica before any worker serves;
    of two workers exactly one restores."""
    db = tmp_path / "app.db"
    env = server_env(db, s3, litestream_bin)
    first = start_server("uvicorn", tmp_path, env)
    try:
        for body in ("a", "b", "c"):
            first.post_note(body)
    finally:
        stopped_cleanly(first)
    for leftover in tmp_path.glob("*app.db*"):
        leftover.unlink() if leftover.is_file() else None
    assert not db.exists()

    second = start_server("uvicorn", tmp_path, env, workers=2)
    try:
        statuses_of_all_workers(second, 2)
        for _ in range(10):
            assert second.get("/notes").json() == ["a", "b", "c"]
    finally:
        stopped_cleanly(second)
    assert second.output().count(f"restored {db} from") == 1, second.output()


def test_empty_replica_means_a_fresh_start(tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """No database and an empty replica: the app starts on a new, empty database."""
    db = tmp_path / "app.db"
    server = start_server("uvicorn", tmp_path, server_env(db, s3, litestream_bin))
    try:
        assert server.get("/notes").json() == []
        assert "no backup of" in server.output()
    finally:
        stopped_cleanly(server)


def test_durable_writes_through_standby_workers_are_in_the_replica(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """A standby worker's durable request asks the leader's Litestream: after durable
    writes through every worker, SIGKILL everything at once — the replica has them all."""
    db = tmp_path / "app.db"
    env = server_env(db, s3, litestream_bin, ASGI_LITESTREAM_SYNC_INTERVAL="10")
    server = start_server("uvicorn", tmp_path, env, workers=3)
    acknowledged, workers = [], set()
    try:
        statuses_of_all_workers(server, 3)
        for i in range(40):
            response = httpx.post(server.base + "/notes/durable", json={"body": f"d-{i}"},
                                  timeout=15, headers={"connection": "close"})
            assert response.status_code == 201, response.text
            acknowledged.append(f"d-{i}")
            workers.add(response.json()["worker"])
        assert len(workers) >= 2  # the leader and at least one standby answered
    finally:
        # Litestream first, so that it cannot make a final sync on its way out.
        everyone = [*descendants(server.process.pid), server.process.pid]
        for pid in sorted(everyone, key=lambda p: not is_litestream(p)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == acknowledged
