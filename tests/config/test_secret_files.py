"""Keys read from files (access_key_id_file / secret_access_key_file): read at startup,
given to Litestream through its environment only, and every bad file a ConfigError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from asgi_litestream import ConfigError, Settings
from asgi_litestream._config.secret_files import read_key


def key_files(tmp_path: Path, key_id: str = "AKIA-TEST-1\n",
              secret: str = "secret-test-1\n") -> dict[str, Path]:
    (tmp_path / "id").write_text(key_id)
    (tmp_path / "secret").write_text(secret)
    return {"access_key_id_file": tmp_path / "id", "secret_access_key_file": tmp_path / "secret"}


def build(tmp_path: Path, environ: dict[str, str] | None = None, **options: Any) -> Settings:
    options.setdefault("database", tmp_path / "app.db")
    options.setdefault("replica_url", "s3://bucket/app")
    return Settings.from_options(environ=environ or {}, **options)


def test_keys_are_read_from_the_files_one_newline_stripped(tmp_path: Path) -> None:
    """The files' keys (less one trailing newline) reach Litestream's environment and the
    scrubbed secrets; never the repr."""
    settings = build(tmp_path, **key_files(tmp_path, "AKIA-TEST-1\n", "s3cret ends \n\n"))
    env = settings.child_env({})
    assert env["LITESTREAM_ACCESS_KEY_ID"] == "AKIA-TEST-1"
    assert env["LITESTREAM_SECRET_ACCESS_KEY"] == "s3cret ends \n"
    assert {"AKIA-TEST-1", "s3cret ends \n"} <= set(settings.secrets())
    assert "AKIA-TEST-1" not in repr(settings) and "s3cret" not in repr(settings)
    assert settings.credentials_source == "file"


def test_the_files_come_from_the_environment_too(tmp_path: Path) -> None:
    """ASGI_LITESTREAM_*_FILE name the files, as a container's env would."""
    files = key_files(tmp_path, "AKIA-ENV-2", "secret-env-2")
    settings = build(tmp_path, {"ASGI_LITESTREAM_ACCESS_KEY_ID_FILE": str(files[
        "access_key_id_file"]), "ASGI_LITESTREAM_SECRET_ACCESS_KEY_FILE": str(files[
            "secret_access_key_file"]), "AWS_ACCESS_KEY_ID": "AKIA-AMBIENT"})
    assert settings.access_key_id == "AKIA-ENV-2"
    assert settings.child_env({"AWS_ACCESS_KEY_ID": "AKIA-AMBIENT"})[
        "LITESTREAM_ACCESS_KEY_ID"] == "AKIA-ENV-2"


@pytest.mark.parametrize(("content", "problem"), [("", "is empty"), ("\n", "is empty"),
                                                  (None, "cannot be read")])
def test_a_bad_file_at_startup_names_the_file_and_the_fix(
        tmp_path: Path, content: str | None, problem: str) -> None:
    """Empty, blank or missing: startup stops, naming the option, the file and the fix."""
    files = key_files(tmp_path)
    path = files["secret_access_key_file"]
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, **files)
    assert caught.value.option == "secret_access_key_file"
    assert str(path) in str(caught.value) and problem in str(caught.value)
    assert "Fix: mount the secret" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A file the app may not read is a ConfigError, not a crash."""
    files = key_files(tmp_path)
    files["access_key_id_file"].chmod(0)
    with pytest.raises(ConfigError, match=r"access_key_id_file.*cannot be read"):
        build(tmp_path, **files)


@pytest.mark.parametrize(("extra", "environ", "where"), [
    ({"access_key_id": "AKIA-X"}, {}, "access_key_id"),
    ({"secret_access_key": "sec-x"}, {}, "secret_access_key"),
    ({}, {"LITESTREAM_ACCESS_KEY_ID": "AKIA-X"}, "LITESTREAM_ACCESS_KEY_ID"),
])
def test_a_key_and_its_file_are_refused(tmp_path: Path, extra: dict[str, str],
                                        environ: dict[str, str], where: str) -> None:
    """Both a key and a key file: which one is meant? A ConfigError says keep one."""
    with pytest.raises(ConfigError, match=f"is given, and so is {where}.*keep one"):
        build(tmp_path, environ, **key_files(tmp_path), **extra)


def test_one_file_without_the_other_is_refused(tmp_path: Path) -> None:
    """The two files go together (they rotate together)."""
    files = key_files(tmp_path)
    with pytest.raises(ConfigError, match="secret_access_key_file=None: is needed with"):
        build(tmp_path, access_key_id_file=files["access_key_id_file"])


@pytest.mark.parametrize(("options", "environ", "source"), [
    ({"access_key_id": "AKIA-O", "secret_access_key": "sec-o"}, {}, "option"),
    ({}, {"AWS_ACCESS_KEY_ID": "AKIA-E", "AWS_SECRET_ACCESS_KEY": "sec-e"}, "environment"),
    ({}, {}, "default chain"),
])
def test_where_the_keys_come_from(tmp_path: Path, options: dict[str, str],
                                  environ: dict[str, str], source: str) -> None:
    """credentials_source says option, environment or default chain (files: above)."""
    assert build(tmp_path, environ, **options).credentials_source == source


def test_the_default_chain_reaches_litestream_untouched(tmp_path: Path) -> None:
    """No keys given: IRSA, ECS, profiles and endpoint variables pass through as they are."""
    ambient = {"AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
               "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/creds",
               "AWS_PROFILE": "backup", "AWS_ENDPOINT_URL_S3": "http://minio:9000"}
    env = build(tmp_path, ambient).child_env(ambient)
    assert {k: env[k] for k in ambient} == ambient
    assert "LITESTREAM_ACCESS_KEY_ID" not in env


def test_read_key_says_why_not(tmp_path: Path) -> None:
    """The watcher's reader never raises: None and the reason."""
    assert read_key(tmp_path / "missing")[0] is None
    (tmp_path / "crlf").write_text("AKIA-3\r\n")
    assert read_key(tmp_path / "crlf") == ("AKIA-3", "")
    (tmp_path / "blank").write_text("  \n")
    assert read_key(tmp_path / "blank") == (None, "is empty")
