"""config_path=: a secret the user's litestream.yml writes out literally never reaches
the generated config (only a ${VAR} reference does), a replica written as typed keys is
read with its endpoint, region and keys by our own S3 calls (the lease), a lease that
cannot be written with the right keys is refused, and a download URL's credentials are
never logged. Real Litestream, moto, s3rver."""

from __future__ import annotations

import http.server
import json
import logging
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
import yaml

from asgi_litestream import ConfigError, DownloadError, LitestreamLifespan
from asgi_litestream._config.config_file import expand_env
from asgi_litestream._config.settings import Settings
from asgi_litestream._litestream.download import download_litestream
from asgi_litestream._litestream.workdir import generated_config
from asgi_litestream._locks.lease import LOCK_NAME
from asgi_litestream._locks.lease_stores import lease_store
from tests.helpers import S3, LifespanFailed, client, lifespan, notes_app, restore

# Every character a YAML scalar or Litestream's expansion could misread.
NASTY = "p\"a\\s#s: w'o{r}d\n\t*&!%@`\u00e9\u2028 end"


def _forms(secret: str) -> list[bytes]:
    """The secret as it could appear in a file: raw, JSON- and YAML-escaped."""
    once = json.dumps(secret)[1:-1]
    return [form.encode() for form in (secret, once, json.dumps(secret, ensure_ascii=False)[1:-1],
                                       secret.replace("\n", "\\n"))]


def _typed_s3(s3: S3, path: str, **keys: Any) -> dict[str, Any]:
    return {"type": "s3", "bucket": s3.bucket, "path": path, "endpoint": s3.endpoint,
            "region": "us-east-1", **keys}


def test_literal_secrets_stay_out_of_the_generated_file(
    tmp_path: Path, litestream_bin: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Top-level and replica secrets written out literally are ${VAR}s in the generated
    file (asserted on its bytes); Litestream reads that file, and expanding it with the
    child's environment gives every value back exactly."""
    monkeypatch.setenv("MY_TOKEN", "from-the-environment")
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({
        "access-key-id": "AKIATOPLEVEL00001", "secret-access-key": NASTY,
        "dbs": [{"path": str(tmp_path / "app.db"),
                 "replica": {"type": "file", "path": str(tmp_path / "replica"),
                             "password": NASTY + "-replica", "token": "$MY_TOKEN"}}],
    }))
    settings = Settings.from_options(config_path=config)
    env = settings.child_env(os.environ)
    with generated_config(settings) as (path, _):
        generated = path.read_bytes()
        listed = subprocess.run([str(litestream_bin), "databases", "-config", str(path)],
                                env=env, capture_output=True, text=True, timeout=30)
    for secret in ("AKIATOPLEVEL00001", NASTY, NASTY + "-replica"):
        for form in _forms(secret):
            assert form not in generated, (secret, generated)
    assert b"$MY_TOKEN" in generated  # the user's own reference, kept as written
    assert listed.returncode == 0, listed.stderr
    assert str(tmp_path / "app.db") in listed.stdout
    parsed = yaml.safe_load(expand_env(generated.decode(), env))
    assert parsed["access-key-id"] == "AKIATOPLEVEL00001"
    assert parsed["secret-access-key"] == NASTY
    replica = parsed["dbs"][0]["replica"]
    assert replica["password"] == NASTY + "-replica"
    assert replica["token"] == "from-the-environment"


@pytest.mark.parametrize("written", ["a$HOME", "b${HOME}", "c$.", "d${}x", "e$1x", "f$$x",
                                     "g$-x", "j$", "k${PWD}$USER", "l${@}m", "m$_x"])
def test_references_are_read_as_litestream_expands_them(
    tmp_path: Path, litestream_bin: Path, written: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value of the file with '$' in it means what Litestream makes of it (the path
    `litestream databases` reports): what our own S3 calls and paths are built from."""
    monkeypatch.setenv("USER", "someone")
    config = tmp_path / "litestream.yml"
    path = f"{tmp_path}/{written}.db"
    config.write_text(f'dbs:\n  - path: "{path}"\n    replica: {{url: "file://{tmp_path}/r"}}\n')
    listed = subprocess.run([str(litestream_bin), "databases", "-config", str(config)],
                            capture_output=True, text=True, timeout=30, check=True)
    litestreams = listed.stdout.splitlines()[-1].split()[0]
    assert litestreams == expand_env(path, os.environ)
    assert str(Settings.from_options(config_path=config).databases[0].path) == litestreams


@pytest.mark.integration
def test_literal_keys_reach_a_signing_s3_through_the_references(
    tmp_path: Path, litestream_bin: Path, s3rver: S3,
) -> None:
    """Keys written literally in a typed replica reach S3 through the generated file's
    references alone (s3rver checks signatures; the copy of the keys we give our own
    S3 client is taken out of the environment): the row restores."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('signed')")
    conn.close()
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"path": str(db), "replica": _typed_s3(
        s3rver, "app", **{"access-key-id": s3rver.access_key_id,
                          "secret-access-key": s3rver.secret_access_key})}]}))
    settings = Settings.from_options(config_path=config)
    env = settings.child_env(os.environ)
    for name in ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    with generated_config(settings) as (path, _):
        assert s3rver.secret_access_key.encode() not in path.read_bytes()
        result = subprocess.run([str(litestream_bin), "replicate", "-once", "-config",
                                 str(path)], env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 0, result.stderr
    assert restore(litestream_bin, s3rver.url("app"), tmp_path / "out.db",
                   env=s3rver.env()) == ["signed"]


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_typed_s3_replica_holds_the_lease(
    tmp_path: Path, litestream_bin: Path, s3: S3,
) -> None:
    """A replica written as typed keys (endpoint, region, literal keys; none in the
    environment): the lease is taken in that bucket, the write replicates, and the
    generated file holds no key."""
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"path": str(db), "replica": _typed_s3(
        s3, "app", **{"access-key-id": s3.access_key_id,
                      "secret-access-key": s3.secret_access_key})}]}))
    app = LitestreamLifespan(notes_app(db), config_path=config, bin_path=litestream_bin,
                             lease=True, lease_ttl=6)
    async with lifespan(app) as state, client(app, state) as http:
        with anyio.fail_after(30):  # serving at once (503); the app once the lease is ours
            while (await http.get("/notes")).status_code == 503:
                await anyio.sleep(0.01)
        assert state["litestream"].running
        response = await http.post("/notes/durable", json={"body": "leased"})
        assert response.status_code == 201, response.text
        generated = state["litestream"].config_path.read_bytes()
        for secret in (s3.access_key_id, s3.secret_access_key):
            assert secret.encode() not in generated
        bucket = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                              aws_access_key_id=s3.access_key_id,
                              aws_secret_access_key=s3.secret_access_key)
        lock = json.loads(bucket.get_object(Bucket=s3.bucket,
                                            Key=f"app/{LOCK_NAME}")["Body"].read())
        assert lock["owner"].endswith(f":{os.getpid()}")
    assert restore(litestream_bin, s3.url("app"), tmp_path / "out.db",
                   env=s3.env()) == ["leased"]


def test_typed_keys_and_top_level_defaults_reach_the_lease_store(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Endpoint and region at the top of the file, keys as $VAR references: the lease
    store built from the settings writes its lock into that bucket."""
    monkeypatch.setenv("MY_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("MY_SECRET", s3.secret_access_key)
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({
        "endpoint": s3.endpoint, "region": "us-east-1",
        "access-key-id": "$MY_KEY_ID", "secret-access-key": "${MY_SECRET}",
        "dbs": [{"path": str(tmp_path / "app.db"),
                 "replica": {"type": "s3", "bucket": s3.bucket, "path": "deep/app"}}]}))
    settings = Settings.from_options(config_path=config, lease=True)
    store = lease_store(settings.lease_replica, settings.child_env(os.environ), timeout=5)
    lease = store.acquire(6)
    assert store.read() == lease
    store.release(lease)


def test_a_lease_the_file_gives_other_keys_than_its_neighbours_is_refused(
    tmp_path: Path, s3: S3,
) -> None:
    """Two typed S3 replicas with different keys: our one set of credentials cannot be
    the lease replica's, so lease=True is a ConfigError naming the fix."""
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [
        {"path": str(tmp_path / "a.db"), "replica": _typed_s3(
            s3, "a", **{"access-key-id": "AKIAFIRST", "secret-access-key": "first"})},
        {"path": str(tmp_path / "b.db"), "replica": _typed_s3(
            s3, "b", **{"access-key-id": "AKIASECOND", "secret-access-key": "second"})},
    ]}))
    with pytest.raises(ConfigError, match="same access-key-id") as refused:
        Settings.from_options(config_path=config, lease=True).child_env(os.environ)
    assert refused.value.option == "lease"
    Settings.from_options(config_path=config).child_env(os.environ)  # no lease: fine


@pytest.mark.anyio
@pytest.mark.integration
async def test_the_refusal_fails_startup_before_anything_runs(
    tmp_path: Path, litestream_bin: Path, s3: S3,
) -> None:
    """The same file with lease=True: startup fails with the ConfigError."""
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [
        {"path": str(tmp_path / "a.db"), "replica": _typed_s3(
            s3, "a", **{"access-key-id": "AKIAFIRST", "secret-access-key": "first"})},
        {"path": str(tmp_path / "b.db"), "replica": _typed_s3(s3, "b")},
    ]}))
    app = LitestreamLifespan(notes_app(tmp_path / "a.db"), config_path=config,
                             bin_path=litestream_bin, lease=True)
    with pytest.raises(LifespanFailed) as failure:
        async with lifespan(app):
            pass
    assert isinstance(failure.value.error, ConfigError), failure.value.message


# -- download_url -----------------------------------------------------------------------

class _AnyBytes(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if "missing" in self.path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"bytes")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    """A local HTTP server answering any path with 5 bytes (``/missing...``: 404)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyBytes)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("path", ["", "/missing"])
def test_download_url_credentials_are_never_logged(
    tmp_path: Path, mirror: str, path: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A download_url with a password: neither the log lines nor the error (a bad
    checksum, a 404) show it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.DEBUG, logger="asgi_litestream"), \
            pytest.raises(DownloadError) as failure:
        download_litestream(version="0.0.0-test", download_url=f"http://mirror-user:"
                            f"Pa55w0rd-s3cret@{mirror}{path}", cache_dir=tmp_path,
                            sha256="a" * 64)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "downloading litestream from http://mirror-user:***@" in logged
    assert "Pa55w0rd-s3cret" not in logged + str(failure.value)
    assert "mirror-user:***@" in str(failure.value)


def test_keys_a_config_file_gives_its_replicas_cannot_rotate(tmp_path: Path) -> None:
    """Litestream reads such keys from its generated file: key files beside them are
    refused at startup, and so is a rotation, naming the fix."""
    from asgi_litestream._litestream.logs import LitestreamLog
    from asgi_litestream._primary.credentials import Credentials

    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"path": str(tmp_path / "app.db"), "replica": {
        "type": "s3", "bucket": "bucket", "path": "app", "access-key-id": "AKIA-IN-FILE",
        "secret-access-key": "in-file"}}]}))
    (tmp_path / "id").write_text("AKIA-FILE\n")
    (tmp_path / "secret").write_text("secret\n")
    with pytest.raises(ConfigError, match=r"access_key_id_file.*take access-key-id"):
        Settings.from_options(environ={}, config_path=config,
                              access_key_id_file=tmp_path / "id",
                              secret_access_key_file=tmp_path / "secret")
    settings = Settings.from_options(environ={}, config_path=config)
    credentials = Credentials(settings, env={}, keeper=None,  # type: ignore[arg-type]
                              log=LitestreamLog([]))
    with pytest.raises(ConfigError, match="cannot change the keys"):
        anyio.run(lambda: credentials.rotate("AKIA-NEW", "secret-new"))
