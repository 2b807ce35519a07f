"""One writer across hosts: two app servers stand for two hosts (separate data
folders, one replica) and the lease in the replica decides which one replicates.
Real uvicorn, real Litestream, real S3 (moto) or a file replica."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.helpers import S3, restore
from tests.integration.servers import Server, start_server
from tests.proxy import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def host(tmp_path: Path, name: str, url: str, s3: S3 | None, ttl: float) -> Server:
    """One "host": its own data folder, the shared replica, the lease on."""
    folder = tmp_path / name
    folder.mkdir()
    env = {"ASGI_LITESTREAM_DATABASE": str(folder / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": url, "ASGI_LITESTREAM_LEASE": "1",
           "ASGI_LITESTREAM_LEASE_TTL": str(ttl), "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.5"}
    if s3 is not None:
        env.update(LITESTREAM_ACCESS_KEY_ID=s3.access_key_id,
                   LITESTREAM_SECRET_ACCESS_KEY=s3.secret_access_key)
    return start_server("uvicorn", folder, env, wait=False)


def status(server: Server) -> tuple[int, dict[str, Any]] | None:
    try:
        response = server.get("/_litestream/status")
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def wait_for(server: Server, predicate: Any, what: str, timeout: float = 60
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = status(server)
        if found is not None and predicate(*found):
            return found[1]
        if server.process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s\n{server.output()}")


class Writer(threading.Thread):
    """A steady load of small durable commits; records what was acknowledged."""

    def __init__(self, server: Server, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix = server, prefix
        self.acknowledged: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.base, timeout=10) as http:
            while not self.halt.is_set():
                body = f"{self.prefix}-{len(self.acknowledged)}"
                try:
                    response = http.post("/notes/durable", json={"body": body})
                except httpx.TransportError:
                    return  # the server went away
                if response.status_code == 201:
                    self.acknowledged.append(body)
                time.sleep(0.02)

    def finish(self) -> list[str]:
        self.halt.set()
        self.join(30)
        return self.acknowledged


def a_writes_b_waits(tmp_path: Path, url_a: str, url_b: str, s3: S3, ttl: float,
                     servers: list[Server]
                     ) -> tuple[Server, Server, Writer, dict[str, Any]]:
    """A replicating under a steady load, B waiting for A's lease; A's last status."""
    a = host(tmp_path, "a", url_a, s3, ttl)
    servers.append(a)
    wait_for(a, lambda code, body: code == 200, "A replicating")
    writer = Writer(a, "a")
    writer.start()
    b = host(tmp_path, "b", url_b, s3, ttl)
    servers.append(b)
    wait_for(b, lambda code, body: (body.get("lease") or {}).get("holder"), "B waits")
    while len(writer.acknowledged) < 10:
        time.sleep(0.05)
    return a, b, writer, wait_for(a, lambda code, body: code == 200, "A's lease")


def expires(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["lease"]["expires_at"])


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_graceful_handover_takes_a_second_and_loses_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, litestream_bin: Path,
) -> None:
    """A serves writes; B waits (503, holder logged); A stops gracefully; B takes the
    lease long before A's would have expired, restores every row A acknowledged, and
    its own writes follow them in the replica."""
    s3: S3 | None = request.getfixturevalue("s3") if kind == "s3" else None
    url = s3.url() if s3 else f"file://{tmp_path}/replica"
    ttl = 30.0
    a = host(tmp_path, "a", url, s3, ttl)
    b: Server | None = None
    try:
        first = wait_for(a, lambda code, body: code == 200, "A replicating")
        assert first["lease"]["role"] == "holder"
        writer = Writer(a, "a")
        writer.start()
        b = host(tmp_path, "b", url, s3, ttl)
        waiting = wait_for(b, lambda code, body: (body.get("lease") or {}).get("holder"),
                           "B waiting")
        assert status(b)[0] == 503  # type: ignore[index]
        assert waiting["lease"]["holder"] == first["lease"]["holder"]
        held = 'asgi_litestream_lease_held{name="litestream"}'
        assert f"{held} 1" in a.get("/_litestream/metrics").text
        assert f"{held} 0" in b.get("/_litestream/metrics").text
        wait_for(b, lambda code, body: "waiting for the lease" in b.output(), "B logs it")
        assert f"held by {first['lease']['holder']}" in b.output()
        while len(writer.acknowledged) < 20:
            time.sleep(0.05)
        last_a = wait_for(a, lambda code, body: code == 200, "A's lease")
        assert a.stop() == -signal.SIGTERM  # uvicorn re-raises it once shut down
        stopped = time.monotonic()
        acknowledged_a = writer.finish()
        taken = wait_for(b, lambda code, body: code == 200, "B takes over", timeout=ttl)
        handover = time.monotonic() - stopped
        # Released, not expired: B holds it well before A's last lease ran out.
        assert taken["lease"]["holder"] != last_a["lease"]["holder"]
        assert expires(taken).timestamp() - ttl < expires(last_a).timestamp()
        print(f"\nhandover ({kind}): {handover:.2f}s from A's exit to B ready")  # noqa: T201
        notes = httpx.get(b.base + "/notes", timeout=10).json()
        assert notes[:len(acknowledged_a)] == acknowledged_a
        writer_b = Writer(b, "b")
        writer_b.start()
        while len(writer_b.acknowledged) < 10:
            time.sleep(0.05)
        acknowledged_b = writer_b.finish()
        assert b.stop() == -signal.SIGTERM
    finally:
        for server in (a, b):
            if server is not None:
                server.stop(signal.SIGKILL)
    env = s3.env() if s3 else None
    restored = restore(litestream_bin, url, tmp_path / "check.db", env)
    assert [r for r in restored if r.startswith("a-")][:len(acknowledged_a)] == acknowledged_a
    assert [r for r in restored if r.startswith("b-")] == acknowledged_b
    assert restored.index(acknowledged_b[0]) > restored.index(acknowledged_a[-1])


def test_a_killed_holder_is_succeeded_after_the_ttl_not_before(
    tmp_path: Path, s3: S3,
) -> None:
    """A is SIGKILLed (no release): B takes the lease only once A's has expired."""
    ttl = 6.0
    servers: list[Server] = []
    try:
        a, b, writer, last_a = a_writes_b_waits(tmp_path, s3.url(), s3.url(), s3, ttl,
                                                servers)
        a.stop(signal.SIGKILL)
        acknowledged = writer.finish()
        taken = wait_for(b, lambda code, body: code == 200, "B takes over", timeout=4 * ttl)
        acquired_at = expires(taken).timestamp() - ttl  # B wrote its expiry as now + ttl
        # Not before A's lease (as last renewed, at most ttl/3 before we read it) expired.
        assert acquired_at >= expires(last_a).timestamp() - ttl / 3
        notes = httpx.get(b.base + "/notes", timeout=10).json()
        assert notes[:len(acknowledged)] == acknowledged
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def test_a_holder_cut_off_from_s3_fences_itself_before_its_lease_expires(
    tmp_path: Path, s3: S3, s3_behind_proxy: tuple[S3, Proxy], litestream_bin: Path,
) -> None:
    """A's S3 hangs: A stops replicating (fenced, 503) before its lease can expire; B
    takes over only after it did; the replica restores cleanly with every row A
    acknowledged before the cut and B's rows after."""
    via_proxy, proxy = s3_behind_proxy
    ttl = 6.0
    servers: list[Server] = []
    try:
        a, b, writer, last_a = a_writes_b_waits(tmp_path, via_proxy.url(), s3.url(), s3, ttl,
                                                servers)
        proxy.set_mode("hang")
        fenced = wait_for(a, lambda code, body: body.get("state") == "fenced", "A fenced",
                          timeout=3 * ttl)
        fenced_at = time.time()
        assert status(a)[0] == 503  # type: ignore[index]
        assert "FENCED" in a.output() and fenced["lease"]["role"] == "fenced"
        acknowledged = writer.finish()
        taken = wait_for(b, lambda code, body: code == 200, "B takes over", timeout=4 * ttl)
        margin = expires(last_a).timestamp() - fenced_at
        print(f"\nfenced {margin:.2f}s before A's lease could expire")  # noqa: T201
        assert expires(taken).timestamp() - ttl >= fenced_at
        proxy.set_mode("pass")  # A can reach S3 again, but B holds the lease: A stays out
        still = wait_for(a, lambda code, body: body["lease"]["holder"] == taken["lease"][
            "holder"], "A sees B holding the lease")
        assert still["state"] == "fenced" and status(a)[0] == 503  # type: ignore[index]
        writer_b = Writer(b, "b")
        writer_b.start()
        while len(writer_b.acknowledged) < 5:
            time.sleep(0.05)
        acknowledged_b = writer_b.finish()
        assert b.stop() == -signal.SIGTERM
    finally:
        proxy.set_mode("pass")
        for server in servers:
            server.stop(signal.SIGKILL)
    restored = restore(litestream_bin, s3.url(), tmp_path / "check.db", s3.env())
    assert restored[:len(acknowledged)] == acknowledged
    assert [r for r in restored if r.startswith("b-")] == acknowledged_b


@pytest.mark.anyio
async def test_a_database_behind_the_replica_is_set_aside_and_restored(
    tmp_path: Path, litestream_bin: Path,
) -> None:
    """A host coming back with an old copy (the replica moved on since) does not
    replicate from it: with the lease taken, the old file is moved aside, never
    deleted, and the replica's newer copy is restored before the app starts writing."""
    import shutil

    from asgi_litestream import LitestreamLifespan
    from tests.helpers import client, lifespan, notes_app

    url = f"file://{tmp_path}/replica"
    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    there.mkdir()

    async def session(folder: Path, rows: list[str]) -> list[str]:
        app = LitestreamLifespan(notes_app(folder / "app.db"), database=folder / "app.db",
                                 replica_url=url, bin_path=litestream_bin, lease=True)
        async with lifespan(app) as state, client(app, state) as http:
            with anyio.fail_after(30):  # serving at once (503); the app once the lease is ours
                while (await http.get("/notes")).status_code == 503:
                    await anyio.sleep(0.01)
            assert state["litestream"].running
            for row in rows:
                assert (await http.post("/notes/durable", json={"body": row})
                        ).status_code == 201
            return list((await http.get("/notes")).json())

    await session(here, ["one", "two"])
    for name in ("app.db", "app.db-wal", ".app.db-litestream"):  # B's old copy of then
        source = here / name
        if source.exists():
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, there / name)
    await session(here, ["three"])
    assert await session(there, ["four"]) == ["one", "two", "three", "four"]
    (aside,) = [p for p in there.glob("app.db.behind-*") if p.name[-4:] not in ("-wal", "-shm")]
    with sqlite3.connect(aside) as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM notes")] == ["one", "two"]
    conn.close()


def test_a_fenced_holder_takes_the_lease_back_when_s3_returns(
    tmp_path: Path, s3: S3, s3_behind_proxy: tuple[S3, Proxy], litestream_bin: Path,
) -> None:
    """Alone, cut off long enough to fence: once S3 answers again and nobody took the
    lease, it takes it back and replicates again, with nothing acknowledged lost."""
    via_proxy, proxy = s3_behind_proxy
    a = host(tmp_path, "a", via_proxy.url(), s3, 6.0)
    try:
        wait_for(a, lambda code, body: code == 200, "A replicating")
        writer = Writer(a, "a")
        writer.start()
        while len(writer.acknowledged) < 5:
            time.sleep(0.05)
        proxy.set_mode("hang")
        wait_for(a, lambda code, body: body.get("state") == "fenced", "A fenced", 30)
        proxy.set_mode("pass")
        back = wait_for(a, lambda code, body: code == 200, "A replicating again", 60)
        assert back["lease"]["role"] == "holder" and "ours again" in a.output()
        while len(writer.acknowledged) < 10:
            time.sleep(0.05)
        acknowledged = writer.finish()
        assert a.stop() == -signal.SIGTERM
    finally:
        proxy.set_mode("pass")
        a.stop(signal.SIGKILL)
    restored = restore(litestream_bin, s3.url(), tmp_path / "check.db", s3.env())
    # A write refused while fenced was retried with the same body: count each once.
    assert list(dict.fromkeys(r for r in restored if r in acknowledged)) == acknowledged
