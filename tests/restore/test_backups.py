"""Restore points and point-in-time restore: the parts that need no Litestream."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from asgi_litestream._cli.commands import _size
from asgi_litestream._cli.commands import parse_txid as _txid
from asgi_litestream._config.settings import Settings
from asgi_litestream._exceptions import ConfigError, RestoreError
from asgi_litestream._litestream.commands import restore_command
from asgi_litestream._locks.leader_info import LeaderInfo
from asgi_litestream._locks.workers import Leadership
from asgi_litestream._restore.points import (
    _document,
    _point,
    find_database,
    parse_timestamp,
    restore_lock,
    restore_points,
    restore_to,
)
from asgi_litestream._state import State


def ltx(level: int, first: int, last: int, when: str, size: int = 100) -> dict[str, object]:
    """One file as `litestream ltx -json` prints it."""
    return {"level": level, "min_txid": f"{first:016x}", "max_txid": f"{last:016x}",
            "size": size, "timestamp": when}


def settings(tmp_path: Path, *names: str) -> Settings:
    return Settings.from_options(database=[tmp_path / n for n in names or ("app.db",)],
                                 replica_url=f"file://{tmp_path}/replica")


def test_one_point_per_last_txid_from_the_earliest_file(tmp_path: Path) -> None:
    """A state reached by several levels is listed once, from the file that reached it first."""
    db = tmp_path / "app.db"
    points = restore_points(db, [
        ltx(1, 1, 3, "2026-11-30T10:00:30Z", size=900),
        ltx(9, 1, 3, "2026-11-30T10:05:00Z", size=4096),
        ltx(0, 3, 3, "2026-11-30T10:00:03Z", size=300),
        ltx(0, 1, 1, "2026-11-30T10:00:01Z"),
        ltx(0, 0x1a, 0x1b, "2026-11-30T10:00:40Z"),
    ])
    assert [(p.txid, p.level, p.min_txid, p.size) for p in points] == [
        (1, 0, 1, 100), (3, 0, 3, 300), (0x1b, 0, 0x1a, 100)]
    assert points[1].created == datetime(2026, 11, 30, 10, 0, 3, tzinfo=timezone.utc)
    assert {p.database for p in points} == {db}


def test_an_empty_replica_has_no_point(tmp_path: Path) -> None:
    """`ltx -json` printing [] means no restore point, not an error."""
    assert restore_points(tmp_path / "app.db", _document("[]\n")) == []


@pytest.mark.parametrize("files", [[{"level": 0}], [ltx(0, 1, 1, "yesterday")], "nonsense"])
def test_unreadable_ltx_listing_is_a_restore_error(tmp_path: Path, files: object) -> None:
    """A listing in an unknown shape raises RestoreError naming the database."""
    with pytest.raises(RestoreError, match=r"app\.db"):
        restore_points(tmp_path / "app.db", files)


def test_document_skips_log_lines() -> None:
    """The JSON result is found after any log line Litestream printed before it."""
    stdout = '{"time":"x","level":"INFO","msg":"hi"}\n{\n  "txid": "0000000000000002"\n}\n'
    assert _document(stdout) == {"txid": "0000000000000002"}
    with pytest.raises(RestoreError, match="no JSON result"):
        _document("level=INFO msg=hi\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-30T14:03:00Z", datetime(2026, 11, 30, 14, 3, tzinfo=timezone.utc)),
    ("2026-11-30t14:03:00.5z", datetime(2026, 11, 30, 14, 3, 0, 500000, tzinfo=timezone.utc)),
    ("2026-11-30 15:03:00.1234567+01:00",
     datetime(2026, 11, 30, 14, 3, 0, 123456, tzinfo=timezone.utc)),
])
def test_rfc3339_times_are_read_as_utc(text: str, expected: datetime) -> None:
    """RFC 3339 strings (Z or an offset, any fraction) become UTC datetimes."""
    assert parse_timestamp(text) == expected


def test_aware_datetimes_are_converted_and_naive_ones_refused() -> None:
    """An aware datetime is converted to UTC; a naive one is ambiguous, so refused."""
    paris = timezone(timedelta(hours=1))
    assert parse_timestamp(datetime(2026, 11, 30, 15, 3, tzinfo=paris)) == datetime(
        2026, 11, 30, 14, 3, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="no time zone"):
        parse_timestamp(datetime(2026, 11, 30, 15, 3))


@pytest.mark.parametrize("text", ["yesterday", "2026-11-30T14:03:00", "2026-02-30T14:03:00Z"])
def test_bad_times_are_refused(text: str) -> None:
    """A time without zone, in another format or impossible is a ConfigError with a fix."""
    with pytest.raises(ConfigError, match="Fix:"):
        parse_timestamp(text)


def test_point_flags() -> None:
    """A timestamp or a txid becomes Litestream's flag; both at once, or a bad txid, refused."""
    def flags(txid: int | None, timestamp: str | None) -> list[str]:
        command = restore_command(Path("/bin/litestream"), output=Path("/d/out.db"),
                                  config_path=Path("/d/l.yml"), database=Path("/d/app.db"),
                                  txid=txid, timestamp=timestamp)
        at = [i for i, arg in enumerate(command) if arg in ("-txid", "-timestamp")]
        return [arg for i in at for arg in command[i:i + 2]]

    assert _point(None, 27) == (27, None, "at txid 27")
    assert flags(27, None) == ["-txid", "000000000000001b"]
    at_time = _point("2026-11-30T15:03:00.25+01:00", None)
    assert flags(*at_time[:2]) == ["-timestamp", "2026-11-30T14:03:00.250000Z"]
    assert _point(None, None) == (None, None, "at all")
    assert flags(None, None) == []
    for bad in (0, -1, True, 2**64):
        with pytest.raises(ConfigError, match="txid"):
            _point(None, bad)
    with pytest.raises(ConfigError, match="cannot be combined"):
        _point("2026-11-30T14:03:00Z", 3)


def test_find_database_by_path_name_or_stem(tmp_path: Path) -> None:
    """A configured database is named by its path, file name or stem; others are refused."""
    config = settings(tmp_path, "app.db", "users.db")
    users = config.databases[1]
    assert find_database(config, tmp_path / "users.db") == users
    assert find_database(config, "users.db") == users
    assert find_database(config, "users") == users
    with pytest.raises(ConfigError, match="not one of the configured databases"):
        find_database(config, "orders")


def test_restore_to_refuses_an_existing_output_before_running_anything(tmp_path: Path) -> None:
    """An output file, or a WAL left where it would go, is refused before Litestream runs."""
    config = settings(tmp_path)
    (tmp_path / "taken.db").write_text("mine")
    (tmp_path / "stale.db-wal").write_text("someone's WAL")
    for name in ("taken.db", "stale.db"):
        with pytest.raises(RestoreError, match="already exists; refusing to overwrite"):
            restore_to(config, tmp_path / "no-such-litestream", "app.db", tmp_path / name)
    assert (tmp_path / "taken.db").read_text() == "mine"


def test_restore_lock_refuses_while_a_leader_holds_the_database(tmp_path: Path) -> None:
    """While another holder has the leader lock the restore is refused, naming its pid;
    once free it is taken, nests, and is released at the end."""
    config = settings(tmp_path)
    app = Leadership(config.databases)
    assert app.try_lead()
    app.publish(LeaderInfo(pid=os.getpid(), state=State.RUNNING))
    with pytest.raises(RestoreError, match=r"is in use: an app is running it \(pid \d+\)"):
        with restore_lock(config.databases):
            pass
    app.resign()
    with restore_lock(config.databases), restore_lock(config.databases):
        assert not Leadership(config.databases).try_lead()
    after = Leadership(config.databases)
    assert after.try_lead()
    after.resign()


def test_restore_lock_refuses_while_a_worker_serves(tmp_path: Path) -> None:
    """A serving worker (a member lock) also means the app runs, even with no leader now."""
    config = settings(tmp_path)
    worker = Leadership(config.databases)
    assert worker.join()
    with pytest.raises(RestoreError, match="is in use"):
        with restore_lock(config.databases):
            pass
    worker.leave()
    with restore_lock(config.databases):
        pass


def test_cli_txid_is_decimal_or_litestream_hex() -> None:
    """--txid reads decimal (as `backups` shows it), 16 hex digits or 0x-hex."""
    assert _txid("27") == 27
    assert _txid("000000000000001b") == 27
    assert _txid("0x1B") == 27
    with pytest.raises(argparse.ArgumentTypeError):
        _txid("1b")


def test_sizes_are_human() -> None:
    """Sizes read as B, KiB, MiB, GiB."""
    assert [_size(n) for n in (602, 1536, 5 * 2**20, 3 * 2**40)] == [
        "602 B", "1.5 KiB", "5.0 MiB", "3072.0 GiB"]
