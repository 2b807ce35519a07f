"""Positions read from LTX file names, on every layout, and their comparison; the
Litestream-Position header's format. No process: the real-binary proofs are in
tests/integration/test_stale.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._config.position_header import format_position, parse_position, replica_key
from asgi_litestream._litestream.positions import (
    NOTHING,
    Head,
    backend,
    compare,
    head_from_ltx_json,
    head_of,
    local_head,
    replica_heads,
)
from asgi_litestream._primary.guard import kept_copies, set_aside

ONE = "0000000000000001-0000000000000001.ltx"
FOUR = "0000000000000002-0000000000000004.ltx"


def ltx(root: Path, level: int, name: str, tail: bytes = b"\0" * 8) -> None:
    folder = root / str(level)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"LTX1" + b"\0" * 96 + tail)


def test_the_head_is_the_highest_max_txid_and_level_0_wins_a_tie() -> None:
    """The newest transaction wins; at equal txids the uploaded (level 0) file does."""
    assert head_of([(9, FOUR), (0, ONE), (0, FOUR), (1, "junk.ltx")]) == Head(4, FOUR, 0)
    assert head_of([]) == NOTHING


def test_a_file_replica_and_local_history_are_read_from_their_folders(tmp_path: Path) -> None:
    """file:// holds ltx/<level>/, the local history .<db>-litestream/ltx/<level>/."""
    ltx(tmp_path / "replica" / "ltx", 0, FOUR)
    ltx(tmp_path / ".app.db-litestream" / "ltx", 0, ONE)
    db = Database(path=tmp_path / "app.db", replica_url=f"file://{tmp_path}/replica")
    assert backend(db) == "file"
    assert replica_heads(db, {})[""].txid == 4
    assert local_head(tmp_path / "app.db").txid == 1
    assert local_head(tmp_path / "other.db") == NOTHING  # no history: position 0


def test_a_folder_is_listed_once_for_every_member(tmp_path: Path) -> None:
    """One listing gives each member's head; members with nothing are left out."""
    ltx(tmp_path / "replica" / "a.db" / "ltx", 0, FOUR)
    ltx(tmp_path / "replica" / "b.db" / "ltx", 1, ONE)
    (tmp_path / "replica" / "c.db").mkdir()
    folder = Database(path=tmp_path, replica_url=f"file://{tmp_path}/replica", pattern="*.db")
    heads = replica_heads(folder, {})
    assert {name: head.txid for name, head in heads.items()} == {"a.db": 4, "b.db": 1}


def test_other_replicas_are_asked_of_litestream_and_its_json_is_read() -> None:
    """gs://, abs://, typed keys: `litestream ltx -level all -json` answers."""
    assert backend(Database(path=Path("/d/app.db"), replica_url="gs://b/app")) == "litestream"
    text = ('[{"level": 0, "min_txid": "0000000000000002", "max_txid": '
            '"0000000000000004", "size": 9}, {"level": 9, "min_txid": "0000000000000001",'
            ' "max_txid": "0000000000000001", "size": 9}]')
    assert head_from_ltx_json(text) == Head(4, FOUR, 0)
    assert head_from_ltx_json("null") == NOTHING


@pytest.mark.parametrize(("here", "there", "same", "verdict"), [
    (0, 0, None, "fresh"),
    (5, 0, None, "fresh"),
    (0, 4, None, "behind"),
    (3, 4, True, "behind"),
    (4, 4, True, "in_step"),
    (9, 4, None, "in_step"),  # ahead; the file at 4 is not here to compare
    (9, 4, False, "diverged"),
])
def test_compare(here: int, there: int, same: bool | None, verdict: str) -> None:
    """Behind and diverged are never replicated over; the rest is kept."""
    assert compare(Head(here), Head(there, FOUR if there else None, 0),
                   same_file=same) == verdict


def test_a_file_set_aside_keeps_its_sidecars_and_history_and_only_the_newest_are_kept(
    tmp_path: Path,
) -> None:
    """db, -wal, -shm and .<db>-litestream move together; keep_behind bounds them."""
    db = tmp_path / "app.db"
    for round_ in range(4):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").write_text(str(round_))
        (tmp_path / ".app.db-litestream").mkdir()
        aside = set_aside(db, keep=2)
        assert not db.exists() and Path(f"{aside}-wal").read_text() == str(round_)
        assert (tmp_path / f".{aside.name}-litestream").is_dir()
    kept = kept_copies(db)
    assert [p.read_text() for p in kept] == ["2", "3"]
    assert len(list(tmp_path.glob(".app.db.behind-*-litestream"))) == 2


def test_positions_name_the_replica_not_the_file() -> None:
    """Primary and follower agree on the replica's key whatever their file names, the
    endpoint or the credentials; the key shows no bucket."""
    key = replica_key("s3://bucket/app?endpoint=http://10.0.0.1:9000&region=x")
    assert key == replica_key("s3://bucket/app/?endpoint=http://minio:9000")
    assert key != replica_key("s3://bucket/other")
    assert "bucket" not in key and len(key) == 12
    assert parse_position(format_position({key: 42})) == {key: 42}


@pytest.mark.parametrize("value", ["app.db=3", "0123456789ab=\u00b2", "0123456789ab=" + "9" * 4300,
                                   "0123456789ab=-1", "=", "0123456789ab"])
def test_a_malformed_position_is_a_value_error_never_a_crash(value: str) -> None:
    """What a client sends is checked: ValueError (the route answers 400)."""
    with pytest.raises(ValueError, match="Litestream-Position"):
        parse_position(value)
