"""A database file that is not SQLite is refused at startup, before anything spawns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from asgi_litestream import ConfigError, LitestreamLifespan
from asgi_litestream._config.sqlite import check_database_file
from tests.helpers import LifespanFailed, lifespan, notes_app


def test_missing_empty_and_real_databases_pass(tmp_path: Path) -> None:
    """No file, an empty file and a real SQLite database are all fine."""
    check_database_file(tmp_path / "missing.db")
    (tmp_path / "empty.db").touch()
    check_database_file(tmp_path / "empty.db")
    with sqlite3.connect(tmp_path / "real.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    check_database_file(tmp_path / "real.db")


def test_a_file_that_is_not_sqlite_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Any other content: the error names the file, what it starts with, and the fix."""
    path = tmp_path / "app.db"
    path.write_text("not a database at all\n")
    with pytest.raises(ConfigError, match=r"app\.db.*is not a SQLite database.*Fix: point "):
        check_database_file(path)


def test_a_sqlite_header_with_garbage_after_it_is_refused(tmp_path: Path) -> None:
    """The right header on a file SQLite cannot read is refused too."""
    path = tmp_path / "app.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(ConfigError, match="is not a SQLite database SQLite can read"):
        check_database_file(path)


def test_startup_refuses_it_before_spawning_litestream(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """lifespan.startup.failed carries the ConfigError; no Litestream was started (the
    autouse fixture checks) and the file is untouched."""
    path = tmp_path / "app.db"
    path.write_text("hello")
    app = LitestreamLifespan(notes_app(path), database=path,
                             replica_url=f"file://{tmp_path}/replica", bin_path=litestream_bin)

    async def start() -> None:
        async with lifespan(app):
            pass

    with pytest.raises(LifespanFailed) as failure:
        anyio.run(start)
    assert isinstance(failure.value.error, ConfigError)
    assert path.read_text() == "hello"
    assert not (tmp_path / "replica").exists()


def test_wal_mode_is_read_from_the_header(tmp_path: Path) -> None:
    """WAL → True, a rollback journal → False, nothing readable yet → None."""
    from asgi_litestream._config.sqlite import in_wal_mode

    wal, rollback = tmp_path / "wal.db", tmp_path / "rollback.db"
    for path, mode in ((wal, "wal"), (rollback, "delete")):
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    assert in_wal_mode(wal) is True
    assert in_wal_mode(rollback) is False
    assert in_wal_mode(tmp_path / "missing.db") is None
