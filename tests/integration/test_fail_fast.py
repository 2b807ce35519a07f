"""Boot fails fast on what retrying cannot fix, and names it; an outage is still retried;
a SIGTERM during the retries is answered. Real Litestream, real S3 servers (moto, and a
second moto that enforces authentication), a refused port, and a real uvicorn.

Each permanent case runs with restore_timeout=20: a regression back to retrying would
take those 20 s, and the case asserts an end well before it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import boto3
import httpx
import pytest

from asgi_litestream import ConfigError, LitestreamLifespan, RestoreError
from asgi_litestream._follower.process import _Attempt, lasting_failure
from asgi_litestream._litestream.commands import restore_command
from asgi_litestream._litestream.replica_errors import classify, error_line
from asgi_litestream._locks.lease import LeaseStoreError
from asgi_litestream._locks.lease_stores import lease_store
from tests.helpers import S3, LifespanFailed, free_port, is_litestream, lifespan, notes_app
from tests.integration.servers import ROOT, start_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RESTORE_TIMEOUT = 20.0
PERMANENT_WITHIN = 5.0  # measured: well under 1 s each
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class AuthS3:
    """A moto server that checks signatures and IAM policies."""

    endpoint: str
    bucket: str
    allowed: tuple[str, str]  # a user allowed everything: key id, secret
    denied: tuple[str, str]  # a user with no policy at all

    def url(self, path: str = "app") -> str:
        return f"s3://{self.bucket}/{path}?endpoint={self.endpoint}&region=us-east-1"


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """Its users and bucket are made while moto lets anyone in; then authentication is
    switched on (moto's INITIAL_NO_AUTH_ACTION_COUNT, reset to 0 over its API)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("auth-moto") / "moto.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto did not start: see {log.name}")
                time.sleep(0.1)
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "AKIAADMINADMINADMIN0", "aws_secret_access_key": "x"}
        bucket = "bk-" + uuid.uuid4().hex[:12]
        boto3.client("s3", **admin).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **admin)
        users = {}
        for user in ("allowed", "denied"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            users[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        iam.put_user_policy(UserName="allowed", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        switched = httpx.post(endpoint + "/moto-api/reset-auth", content=b"0",
                              headers={"content-type": "text/plain"}, timeout=10)
        assert switched.status_code == 200, switched.text
        yield AuthS3(endpoint, bucket, users["allowed"], users["denied"])
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def app_for(db: Path, url: str, litestream_bin: Path, key: tuple[str, str] | None,
            **options: object) -> LitestreamLifespan:
    credentials = {} if key is None else {"access_key_id": key[0],
                                          "secret_access_key": key[1]}
    return LitestreamLifespan(notes_app(db), database=db, replica_url=url,
                              bin_path=litestream_bin,
                              **{"restore_timeout": RESTORE_TIMEOUT, **credentials,
                                 **options})  # type: ignore[arg-type]


async def fails_to_start(app: LitestreamLifespan) -> tuple[LifespanFailed, float]:
    began = time.monotonic()
    with pytest.raises(LifespanFailed) as failure:
        async with lifespan(app):
            pass
    return failure.value, time.monotonic() - began


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials anywhere: none in the environment, no profile file."""
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def litestreams_in(folder: Path) -> list[int]:
    """Live Litestream processes (anyone's) whose command line names ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_litestream(int(entry.name)):
            try:
                if str(folder).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# -- permanent: one line, at once ------------------------------------------------------


@pytest.mark.parametrize(("case", "cause"), [
    ("no such bucket", "the bucket does not exist"),
    ("access denied", "access denied: the credentials may not use this bucket or path"),
    ("unknown access key", "the access key id is not known to the storage"),
    ("wrong secret", "the secret access key does not match the access key id"),
    ("no credentials", "no credentials: none in the options or the environment, no "
                       "profile, no web identity, container or instance role"),
])
async def test_a_permanent_failure_ends_startup_at_once_and_names_it(
    case: str, cause: str, tmp_path: Path, litestream_bin: Path, auth_moto: AuthS3,
    s3: S3, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
) -> None:
    """Startup fails within seconds, not restore_timeout: a RestoreError naming the cause
    in plain words, the replica (redacted), the fix and Litestream's own words; one
    attempt, no retry logged, no database file left."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    url, key = auth_moto.url(), auth_moto.allowed
    if case == "no such bucket":
        url, key = s3.url().replace(s3.bucket, s3.bucket + "-gone"), (
            s3.access_key_id, s3.secret_access_key)
    elif case == "access denied":
        key = auth_moto.denied
    elif case == "unknown access key":
        key = ("AKIA" + uuid.uuid4().hex[:16].upper(), "whatever-secret")
    elif case == "wrong secret":
        key = (auth_moto.allowed[0], "not-the-secret-" + uuid.uuid4().hex)
    else:
        request.getfixturevalue("no_credentials")
        key = None
    db = tmp_path / "app.db"
    failure, took = await fails_to_start(app_for(db, url, litestream_bin, key))
    assert took < PERMANENT_WITHIN, f"{case}: {took:.1f}s"
    assert isinstance(failure.error, RestoreError)
    message = failure.message
    assert message.startswith(f"cannot restore {db}: {cause} (replica s3://"), message
    assert "Fix: " in message and "Not retried" in message
    assert "\n" not in message
    if key is not None:
        assert key[1] not in message
    assert not [r for r in caplog.records if "(attempt" in r.getMessage()]
    assert sorted(p.name for p in tmp_path.iterdir() if "app.db" in p.name) == [
        ".app.db.litestream-leader", ".app.db.litestream-members"]


async def test_a_fake_binary_is_refused_before_anything_runs(
    tmp_path: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """bin_path pointing at a program that is not Litestream: ConfigError naming
    bin_path, what it printed and the fix, in well under 2 s, as a primary and as a
    follower; it was only ever asked its version."""
    calls = tmp_path / "calls"
    fake = tmp_path / "litestream"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "this is not litestream"\n')
    fake.chmod(0o755)
    for role in ("primary", "follower"):
        app = LitestreamLifespan(notes_app(tmp_path / "app.db"), database=tmp_path / "app.db",
                                 replica_url=s3.url(), bin_path=fake, role=role,
                                 restore_timeout=RESTORE_TIMEOUT)
        failure, took = await fails_to_start(app)
        assert took < 2, f"{role}: {took:.1f}s"
        assert isinstance(failure.error, ConfigError)
        assert failure.message.startswith(f"bin_path={str(fake)!r}: is not Litestream: "
                                          "`litestream version` printed 'this is not "
                                          "litestream'")
        assert "Fix: point bin_path (env ASGI_LITESTREAM_BIN_PATH)" in failure.message
    assert calls.read_text().split() == ["version", "version"]  # nothing else, ever
    assert not (tmp_path / "app.db").exists()


async def test_an_invalid_bucket_name_is_refused_before_anything_runs(
    tmp_path: Path, litestream_bin: Path, no_credentials: None
) -> None:
    """The issue's own case, s3://Bad_Bucket!/x with no credentials: ConfigError naming
    replica_url and the rule, in well under 2 s, and no Litestream started."""
    app = app_for(tmp_path / "app.db", "s3://Bad_Bucket!/x", litestream_bin, None)
    failure, took = await fails_to_start(app)
    assert took < 2
    assert isinstance(failure.error, ConfigError)
    assert failure.message.startswith("replica_url='s3://Bad_Bucket!/x': the bucket name "
                                      "'Bad_Bucket!' holds '!', which no S3 bucket name can")
    assert litestreams_in(tmp_path) == []


# -- transient: still retried --------------------------------------------------------------


async def test_a_refused_endpoint_is_still_retried(
    tmp_path: Path, litestream_bin: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the endpoint's port: every attempt is logged with the cause,
    retried until restore_timeout, then RestoreError."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    url = f"s3://{s3.bucket}/app?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    failure, took = await fails_to_start(app_for(
        tmp_path / "app.db", url, litestream_bin, (s3.access_key_id, s3.secret_access_key),
        restore_timeout=4))
    assert took >= 4
    assert isinstance(failure.error, RestoreError)
    assert "could not read the replica s3://" in failure.message
    attempts = [r.getMessage() for r in caplog.records if "(attempt" in r.getMessage()]
    assert len(attempts) >= 2, caplog.text
    assert all("the connection was refused" in line and "Connection refused" in line
               for line in attempts), attempts


# -- a follower's first restore, the lease, the command line ----------------------------


def test_a_followers_first_restore_of_a_missing_bucket_is_a_lasting_failure(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """`litestream restore -f` of a bucket that does not exist exits with an error no
    restart mends: the follower is told to give up at once (lasting_failure), naming it.
    After a copy was made, the same error is retried as ever."""
    url = s3.url().replace(s3.bucket, s3.bucket + "-gone")
    command = restore_command(litestream_bin, output=tmp_path / "copy.db", replica_url=url,
                              if_replica_exists=True, follow=1.0)
    result = subprocess.run(command, env=s3.env(), capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    attempt = _Attempt(fresh=True, output=tmp_path / "copy.db", code=result.returncode,
                       final_error=error_line(result.stdout + result.stderr))
    failure = lasting_failure(attempt, ever_ready=False)
    assert failure is not None and failure.cause == "the bucket does not exist"
    assert lasting_failure(attempt, ever_ready=True) is None


def test_the_lease_errors_are_judged_the_same(auth_moto: AuthS3, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease's store (boto3) fails with a refused secret, and with no credentials:
    both permanent, as for Litestream."""
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    wrong = {**env, "LITESTREAM_ACCESS_KEY_ID": auth_moto.allowed[0],
             "LITESTREAM_SECRET_ACCESS_KEY": "not-the-secret"}
    for store_env, cause in ((wrong, "secret access key does not match"),
                             (env, "no credentials")):
        with pytest.raises(LeaseStoreError) as info:
            lease_store(auth_moto.url(), store_env, owner="t:1").read()
        failure = classify(info.value)
        assert failure.permanent, str(info.value)
        assert cause in failure.cause


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "asgi_litestream", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_command_line_names_the_cause(tmp_path: Path, s3: S3,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """restore exits 1 and verify reports FAILED, each naming the cause and the fix; a
    fake --bin-path is refused naming --bin-path, as the command line gave it."""
    monkeypatch.setenv("LITESTREAM_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("LITESTREAM_SECRET_ACCESS_KEY", s3.secret_access_key)
    where = ("--database", str(tmp_path / "app.db"), "--replica-url",
             s3.url().replace(s3.bucket, s3.bucket + "-gone"))
    restored = cli("restore", *where)
    assert restored.returncode == 1
    assert "failed: the bucket does not exist. Fix: create it" in restored.stderr
    verified = cli("verify", *where)
    assert verified.returncode == 1
    assert "cannot read the replica: the bucket does not exist. Fix: create it" in \
        verified.stdout
    fake = tmp_path / "litestream"
    fake.write_text("#!/bin/sh\necho 'this is not litestream'\n")
    fake.chmod(0o755)
    refused = cli("restore", *where, "--bin-path", str(fake))
    assert refused.returncode == 1
    assert f"error: --bin-path {fake}: is not Litestream" in refused.stderr
    assert "Traceback" not in restored.stderr + verified.stderr + refused.stderr


# -- under uvicorn -----------------------------------------------------------------------


def test_under_uvicorn_a_permanent_failure_exits_3_naming_it(tmp_path: Path, s3: S3) -> None:
    """The server ends with exit code 3 within seconds, one line names the cause, the
    replica and the fix, and no Litestream is left."""
    env = {"ASGI_LITESTREAM_DATABASE": str(tmp_path / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": s3.url().replace(s3.bucket, s3.bucket + "-gone"),
           "ASGI_LITESTREAM_RESTORE_TIMEOUT": str(RESTORE_TIMEOUT),
           "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
           "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}
    began = time.monotonic()
    server = start_server("uvicorn", tmp_path, env, wait=False)
    code = server.process.wait(15)
    output = server.output()
    assert code == 3, output
    assert time.monotonic() - began < 15
    lines = [line for line in output.splitlines() if "cannot restore" in line]
    assert len(lines) == 1, output
    assert "the bucket does not exist (replica s3://" in lines[0]
    assert "Fix: create it" in lines[0]
    assert litestreams_in(tmp_path) == []


def test_under_uvicorn_sigterm_during_retries_stops_promptly(tmp_path: Path, s3: S3) -> None:
    """A refused endpoint is being retried; SIGTERM (what Kubernetes sends a pod stuck in
    startup) ends the server within seconds, not after restore_timeout or a SIGKILL."""
    url = f"s3://{s3.bucket}/app?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    env = {"ASGI_LITESTREAM_DATABASE": str(tmp_path / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": url, "ASGI_LITESTREAM_RESTORE_TIMEOUT": "120",
           "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
           "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}
    server = start_server("uvicorn", tmp_path, env, wait=False)
    deadline = time.monotonic() + 30
    while "(attempt 2)" not in server.output():
        assert server.process.poll() is None and time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL)
        pytest.fail(f"still starting 10 s after SIGTERM:\n{server.output()}")
    took = time.monotonic() - sent
    assert took < 5, f"{took:.1f}s"
    assert "SIGTERM received during startup: stopping it" in server.output()
    assert "(attempt 3)" not in server.output().split("SIGTERM received")[1]
    assert litestreams_in(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_lease_in_a_missing_bucket_fails_at_once_and_the_app_never_starts(
    tmp_path: Path, s3: S3, litestream_bin: Path,
) -> None:
    """lease=True on a bucket that does not exist: one line naming it within seconds
    (not a wait for the lease forever), and the app's own startup never runs."""
    url = s3.url().replace(f"s3://{s3.bucket}/", f"s3://{s3.bucket}-gone/")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), database=tmp_path / "app.db",
                             replica_url=url, bin_path=litestream_bin, lease=True,
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key)
    began = time.monotonic()
    with pytest.raises(LifespanFailed, match=r"cannot take the lease .* does not exist"):
        async with lifespan(app) as state:
            while state["litestream"].state.value != "failed":
                assert time.monotonic() - began < 10
                await anyio.sleep(0.05)
    assert time.monotonic() - began < 15
