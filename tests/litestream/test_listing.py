"""A folder's replica: which databases it holds, and when listing it is possible."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from asgi_litestream import ConfigError
from asgi_litestream._config.databases import Database, databases_from
from asgi_litestream._litestream.listing import check_listable, replica_names


def folder(url: str) -> Database:
    return Database(path=Path("/data/tenants"), replica_url=url, pattern="*.db")


def test_a_file_replica_lists_the_folders_litestream_wrote(tmp_path: Path) -> None:
    """Only entries holding Litestream's ltx/ folder are databases."""
    for name in ("acme.db", "globex.db"):
        (tmp_path / name / "ltx" / "0").mkdir(parents=True)
    (tmp_path / "lock.json").write_text("{}")
    (tmp_path / "stray").mkdir()
    assert replica_names(folder(f"file://{tmp_path}"), {}) == ["acme.db", "globex.db"]
    assert replica_names(folder(f"file://{tmp_path}/none"), {}) == []


def test_an_s3_folder_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restoring a folder from S3 needs the [s3] extra: said at startup, with the fix."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "boto3" else real(name, *a))
    with pytest.raises(ConfigError, match=r"asgi-litestream\[s3\]"):
        check_listable(folder("s3://bucket/tenants"))


def test_a_scheme_that_cannot_be_listed_is_refused() -> None:
    """A folder on a replica we cannot list is refused, not half-restored."""
    with pytest.raises(ConfigError, match="restore_if_missing=False"):
        check_listable(folder("gs://bucket/tenants"))


def test_a_folder_and_a_file_inside_it_are_refused(tmp_path: Path) -> None:
    """The same database twice (by name and by pattern) would run two replicas."""
    with pytest.raises(ConfigError, match="is also in the folder"):
        databases_from([f"{tmp_path}/*.db", tmp_path / "a.db"], "file:///r")


def test_a_folder_replicates_each_file_under_its_name(tmp_path: Path) -> None:
    """Each database of a folder goes to <replica_url>/<file name>, query kept."""
    (db,) = databases_from(f"{tmp_path}/*.db", "s3://bucket/tenants?region=eu-west-1")
    assert db.is_folder and db.path == tmp_path and db.pattern == "*.db"
    member = db.member(tmp_path / "acme.db")
    assert member.replica_url == "s3://bucket/tenants/acme.db?region=eu-west-1"
    assert db.holds(tmp_path / "acme.db") and not db.holds(tmp_path / "acme.sqlite")
    assert not db.holds(tmp_path / "sub" / "acme.db")
