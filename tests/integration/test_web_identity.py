"""No keys given: credentials from the AWS default chain, which each SDK (Litestream's
Go SDK; boto3, for the lease) finds in the environment, and exchanges and refreshes by
itself. A web identity (EKS IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) and a
container credentials endpoint (ECS, EKS Pod Identity:
AWS_CONTAINER_CREDENTIALS_FULL_URI), against moto with its IAM enforced (tests/iam.py).
It refuses a request not signed by keys its IAM or STS handed out, and the keys of a
session that ran out; sessions here last seconds. So a replica that fills and a lease
still held after several sessions show that both SDKs used the role and came back for
new keys. And the other way round: keys given win over an AWS pair in the environment,
which Litestream itself would prefer. Real Litestream throughout."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import client, lifespan, notes_app, restore
from tests.iam import WEB_IDENTITY_SECONDS, IamMoto

pytestmark = [pytest.mark.integration]

# Left as they are: AWS_CA_BUNDLE is set on these machines, and the library must keep
# removing it from Litestream's environment.
_KEPT = ("AWS_EC2_METADATA_DISABLED", "AWS_CA_BUNDLE")
SESSION_SECONDS = WEB_IDENTITY_SECONDS  # the container's sessions: as short


def nothing_else_in_the_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key, profile or role in the environment or in the machine's AWS files: what a
    test sets is all either SDK can find."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "LITESTREAM_")) and name not in _KEPT:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def app_on(tmp_path: Path, litestream_bin: Path, replica_url: str) -> LitestreamLifespan:
    """The notes app, no keys given, the lease on (renewed every second)."""
    db = tmp_path / "app.db"
    return LitestreamLifespan(notes_app(db), database=db, replica_url=replica_url,
                              bin_path=litestream_bin, lease=True, lease_ttl=3,
                              health_interval=0.2)


async def write_for(app: LitestreamLifespan, seconds: float) -> tuple[list[str], Any, str]:
    """Run ``app`` until it holds the lease, then write durably for ``seconds``; the rows
    acknowledged, the status at the end, and the status route's answer."""
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        with anyio.fail_after(15):  # with lease=True, the gate opens once it is held
            while (await http.get("/notes")).status_code == 503:
                await anyio.sleep(0.05)
        written: list[str] = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            body = f"row-{len(written)}"
            response = await http.post("/notes/durable", json={"body": body})
            assert response.status_code == 201, response.text
            written.append(body)
            await anyio.sleep(0.1)
        status = supervisor.status()
        served = (await http.get("/_litestream/status")).text
    return written, status, served


def assert_held_on_the_default_chain(status: dict[str, Any], logged: str) -> None:
    assert status["state"] == "running" and status["restarts"] == 0, status
    assert status["lease"]["role"] == "holder", status["lease"]
    assert status["credentials"]["source"] == "default chain", status["credentials"]
    assert status["credentials"]["state"] == "ok", status["credentials"]
    assert status["healthy"] is True
    assert "refuses the S3 keys" not in logged


def assert_never_shown(keys: list[tuple[str, str]], *texts: str) -> None:
    """No temporary secret or session token handed out appears in ``texts``."""
    for secret, token in keys:
        for text in texts:
            assert secret not in text and token not in text


@pytest.mark.anyio
async def test_a_web_identity_replicates_and_holds_the_lease(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No keys; the role and the token file in the environment (as EKS sets them), STS
    at AWS_ENDPOINT_URL_STS. Litestream and the lease each trade the token for the
    role's keys, again as each session runs out: the app holds the lease, durable
    writes succeed for several sessions, the status says `default chain` and shows no
    secret, and a restore through the same web identity holds every row."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    role = moto_iam.role()
    store = moto_iam.bucket()
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.a-projected-service-account-token.sig")
    session = "app-" + uuid.uuid4().hex[:8]
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", session)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_iam.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    app = app_on(tmp_path, litestream_bin, store.url())
    written, status, served = await write_for(app, seconds=3 * WEB_IDENTITY_SECONDS + 1)
    assert_held_on_the_default_chain(status, caplog.text)
    sessions = moto_iam.sessions(role)
    # Each SDK opened one at the start and more as they ran out.
    assert len(sessions) >= 4 and {s["session_name"] for s in sessions} == {session}
    assert_never_shown([(s["secret_access_key"], s["session_token"]) for s in sessions],
                       caplog.text, json.dumps(status), served)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == written


@pytest.mark.anyio
async def test_litestreams_request_dumps_never_show_the_roles_credentials(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """LITESTREAM_S3_DEBUG dumps every request and answer of Litestream's AWS SDK, the
    web identity token, STS's answer and each request's X-Amz-Security-Token among
    them: values nobody gave the library. The lines it passes on hide them."""
    caplog.set_level(logging.DEBUG, "asgi_litestream")
    role = moto_iam.role()
    store = moto_iam.bucket()
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.a-projected-service-account-token.sig")
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_iam.endpoint)
    monkeypatch.setenv("LITESTREAM_S3_DEBUG", "request-with-body,response-with-body")
    app = app_on(tmp_path, litestream_bin, store.url())
    await write_for(app, seconds=1)
    # Dumped, and hidden.
    for shown in ("X-Amz-Security-Token: ***", "WebIdentityToken=***",
                  "<SecretAccessKey>***", "<SessionToken>***"):
        assert shown in caplog.text
    assert "a-projected-service-account-token" not in caplog.text
    sessions = moto_iam.sessions(role)
    assert sessions
    assert_never_shown([(s["secret_access_key"], s["session_token"]) for s in sessions],
                       caplog.text)


class CredentialsEndpoint:
    """A container credentials endpoint on loopback, as ECS's agent or EKS Pod Identity
    serve one: a GET with the right Authorization header gets new keys of ``role``
    (STS AssumeRole at moto, ``SESSION_SECONDS`` long). Counts the requests by SDK."""

    def __init__(self, moto: IamMoto, role: str, authorization: str) -> None:
        self.requests: Counter[str] = Counter()
        self.handed_out: list[tuple[str, str]] = []
        self.authorization = authorization
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # Each SDK fetches these with its bare HTTP client, and says so.
                agent = self.headers.get("User-Agent", "")
                sdk = ("go" if agent.startswith("Go-http-client")
                       else "boto3" if agent.startswith("python-urllib3") else agent)
                endpoint.requests[sdk] += 1
                if self.headers.get("Authorization") != authorization:
                    self.send_response(401)
                    self.end_headers()
                    return
                keys = moto.assume(role, seconds=SESSION_SECONDS)
                endpoint.handed_out.append((keys["SecretAccessKey"], keys["SessionToken"]))
                body = json.dumps({
                    "AccessKeyId": keys["AccessKeyId"],
                    "SecretAccessKey": keys["SecretAccessKey"],
                    "Token": keys["SessionToken"],
                    "Expiration": keys["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v2/credentials"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def credentials_endpoint(moto_iam: IamMoto) -> Iterator[CredentialsEndpoint]:
    endpoint = CredentialsEndpoint(moto_iam, moto_iam.role(), "pod-" + uuid.uuid4().hex)
    yield endpoint
    endpoint.close()


@pytest.mark.anyio
async def test_container_credentials_replicate_and_hold_the_lease(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        credentials_endpoint: CredentialsEndpoint, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No keys; AWS_CONTAINER_CREDENTIALS_FULL_URI and the authorization token file (as
    EKS Pod Identity sets them). Litestream and the lease each fetch keys from the
    endpoint, again as they run out: the app holds the lease, durable writes succeed
    for several sessions, no secret is shown, and a restore the same way holds every
    row."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    store = moto_iam.bucket()
    authorization = tmp_path / "eks-pod-identity-token"
    authorization.write_text(credentials_endpoint.authorization)
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_endpoint.url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(authorization))
    app = app_on(tmp_path, litestream_bin, store.url())
    written, status, served = await write_for(app, seconds=3 * SESSION_SECONDS + 1)
    assert_held_on_the_default_chain(status, caplog.text)
    # Each SDK came back for new keys as they ran out.
    assert credentials_endpoint.requests["go"] >= 3, credentials_endpoint.requests
    assert credentials_endpoint.requests["boto3"] >= 3, credentials_endpoint.requests
    assert_never_shown(credentials_endpoint.handed_out, caplog.text, json.dumps(status),
                       served)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == written


@pytest.mark.anyio
async def test_keys_given_win_over_keys_in_the_environment(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Keys given (here access_key_id=) while the environment holds other AWS keys (a
    revoked pair, say): Litestream and the lease both sign with the keys given.
    Litestream 0.5.17 prefers AWS_ACCESS_KEY_ID to LITESTREAM_ACCESS_KEY_ID, so the
    library keeps the environment's pair from it."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    user, (given, ambient) = moto_iam.user_with_keys(2)
    moto_iam.revoke(user, ambient)
    store = moto_iam.bucket(given)
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ambient.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ambient.secret_access_key)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=store.url(),
                             bin_path=litestream_bin, lease=True, lease_ttl=3,
                             health_interval=0.2, access_key_id=given.access_key_id,
                             secret_access_key=given.secret_access_key)
    written, status, _ = await write_for(app, seconds=2)
    assert status["credentials"]["source"] == "option", status["credentials"]
    assert status["credentials"]["state"] == "ok", status["credentials"]
    assert status["lease"]["role"] == "holder" and status["healthy"] is True, status
    assert "refuses the S3 keys" not in caplog.text
    # The restore too runs with the given keys only (store signs with them).
    env = {k: v for k, v in store.env().items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == written


@pytest.mark.anyio
async def test_a_rotation_away_from_the_environments_keys_takes(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then rotate_credentials to
    a second pair and the first revoked: the restarted Litestream signs with the
    second (not the environment's first, which it would prefer), writing goes on."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    user, (first, second) = moto_iam.user_with_keys(2)
    store = moto_iam.bucket(first)
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", first.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", first.secret_access_key)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=store.url(),
                             bin_path=litestream_bin, health_interval=0.2)
    async with lifespan(app) as state, client(app, state) as http:
        supervisor = state["litestream"]
        assert supervisor.status()["credentials"]["source"] == "environment"
        assert (await http.post("/notes/durable", json={"body": "before"})).status_code == 201
        await supervisor.rotate_credentials(access_key_id=second.access_key_id,
                                            secret_access_key=second.secret_access_key)
        moto_iam.revoke(user, first)
        response = await http.post("/notes/durable", json={"body": "after"})
        assert response.status_code == 201, response.text
        status = supervisor.status()
    assert status["credentials"]["state"] == "ok", status["credentials"]
    assert "refuses the S3 keys" not in caplog.text
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_CA_BUNDLE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(LITESTREAM_ACCESS_KEY_ID=second.access_key_id,
               LITESTREAM_SECRET_ACCESS_KEY=second.secret_access_key)
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == [
        "before", "after"]


@pytest.mark.anyio
async def test_a_profile_with_a_web_identity_and_sts_endpoint(
        tmp_path: Path, litestream_bin: Path, moto_iam: IamMoto,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """AWS_PROFILE naming a profile in AWS_CONFIG_FILE that holds the role, the token
    file and STS's endpoint (a services section): both SDKs read it and trade the
    token, again as sessions run out."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    role = moto_iam.role()
    store = moto_iam.bucket()
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.a-token-named-by-a-profile.sig")
    nothing_else_in_the_chain(monkeypatch, tmp_path)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile app]\nrole_arn = {role}\n"
                      f"web_identity_token_file = {token}\nregion = us-east-1\n"
                      "services = local\n\n"
                      f"[services local]\nsts =\n  endpoint_url = {moto_iam.endpoint}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "app")
    app = app_on(tmp_path, litestream_bin, store.url())
    written, status, _ = await write_for(app, seconds=2 * WEB_IDENTITY_SECONDS + 1)
    assert_held_on_the_default_chain(status, caplog.text)
    assert len(moto_iam.sessions(role)) >= 4
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    assert restore(litestream_bin, store.url(), tmp_path / "out.db", env=env) == written
