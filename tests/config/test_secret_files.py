"""Keys read from files (access_key_id_file / secret_access_key_file): read at startup,
given to Litestream through its environment only, and every bad file a ConfigError."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from asgi_litestream import ConfigError, Settings
from asgi_litestream._config.secret_files import KeyFileWatch, read_key, watch_key_files


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


def watch_of(files: dict[str, Path]) -> KeyFileWatch:
    return KeyFileWatch((files["access_key_id_file"], files["secret_access_key_file"]),
                        name="t")


def test_the_watch_rotates_to_new_keys_in_both_files(tmp_path: Path) -> None:
    """Both files new: their keys, at once; the keys in use again: nothing."""
    watch = watch_of(key_files(tmp_path, "AKIA-2\n", "secret-2\n"))
    assert watch.look(("AKIA-1", "secret-1")) == ("AKIA-2", "secret-2")
    assert watch.look(("AKIA-2", "secret-2")) is None


def test_the_watch_waits_one_look_when_one_file_changed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Half an update waits one more look (the other file may be on its way); the
    other file arriving meanwhile is applied at once."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    files = key_files(tmp_path, "AKIA-1\n", "secret-2\n")
    watch = watch_of(files)
    assert watch.look(("AKIA-1", "secret-1")) is None
    assert "only one key file changed" in caplog.text
    assert watch.look(("AKIA-1", "secret-1")) == ("AKIA-1", "secret-2")
    files["secret_access_key_file"].write_text("secret-3\n")
    assert watch.look(("AKIA-1", "secret-2")) is None  # half again: a new half
    files["access_key_id_file"].write_text("AKIA-3\n")
    assert watch.look(("AKIA-1", "secret-2")) == ("AKIA-3", "secret-3")


def test_the_watch_never_applies_a_bad_file_and_says_so_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An empty or missing file: nothing applied, one warning per problem."""
    files = key_files(tmp_path, "AKIA-2\n", "")
    watch = watch_of(files)
    for _ in range(3):
        assert watch.look(("AKIA-1", "secret-1")) is None
    assert caplog.text.count("is empty; not applied") == 1
    files["secret_access_key_file"].unlink()
    assert watch.look(("AKIA-1", "secret-1")) is None
    assert caplog.text.count("cannot be read") == 1
    assert "AKIA-2" not in caplog.text


@pytest.mark.anyio
async def test_watch_key_files_rotates_and_survives_a_failed_rotation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The loop hands new keys to ``rotate``; a rotation that fails is logged and the
    next change is still applied; it ends once ``stopped()``."""
    files = key_files(tmp_path, "AKIA-2\n", "secret-2\n")
    applied: list[tuple[str, str]] = [("AKIA-1", "secret-1")]

    async def rotate(key_id: str, secret: str) -> None:
        if key_id == "AKIA-2":
            raise ConfigError("access_key_id", key_id, "is refused", "try another")
        applied.append((key_id, secret))

    async def change_later() -> None:
        while "rotation to the key files' keys failed" not in caplog.text:
            await anyio.sleep(0.01)
        files["access_key_id_file"].write_text("AKIA-3\n")
        files["secret_access_key_file"].write_text("secret-3\n")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(change_later)
            await watch_key_files(
                (files["access_key_id_file"], files["secret_access_key_file"]), name="t",
                interval=0.01, read_at_startup=applied[-1], rotate=rotate,
                stopped=lambda: len(applied) > 1)
    assert applied[-1] == ("AKIA-3", "secret-3")


@pytest.mark.anyio
async def test_watch_key_files_without_files_returns_at_once() -> None:
    """No key files: nothing to watch."""
    async def rotate(key_id: str, secret: str) -> None:
        raise AssertionError("no rotation without files")

    with anyio.fail_after(1):
        await watch_key_files((None, None), name="t", interval=10, read_at_startup=(None, None),
                              rotate=rotate, stopped=lambda: False)


@pytest.mark.anyio
async def test_keys_from_a_call_stay_until_the_files_change(tmp_path: Path) -> None:
    """rotate_credentials() put other keys in place: the unchanged files do not undo
    that; a change to the files does apply."""
    files = key_files(tmp_path, "AKIA-1\n", "secret-1\n")
    in_use = [("AKIA-1", "secret-1")]
    rotations: list[tuple[str, str]] = []

    async def rotate(key_id: str, secret: str) -> None:
        rotations.append((key_id, secret))
        in_use.append((key_id, secret))

    async def call_then_change_files() -> None:
        in_use.append(("AKIA-CALL", "secret-call"))  # what a call does
        await anyio.sleep(0.1)  # ten looks at unchanged files
        assert rotations == []
        files["access_key_id_file"].write_text("AKIA-2\n")
        files["secret_access_key_file"].write_text("secret-2\n")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(call_then_change_files)
            await watch_key_files(
                (files["access_key_id_file"], files["secret_access_key_file"]), name="t",
                interval=0.01, read_at_startup=in_use[0], rotate=rotate,
                stopped=lambda: bool(rotations))
    assert rotations == [("AKIA-2", "secret-2")]
