"""What we check about the database file itself before Litestream touches it."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError

_HEADER = b"SQLite format 3\x00"


def check_database_file(path: Path) -> None:
    """Refuse an existing file that is not a SQLite database, or one SQLite cannot
    read: Litestream would fail on it, or replicate garbage over a good backup. A
    missing or empty file is fine (SQLite creates it)."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("database", str(path), f"cannot be read ({exc.strerror})",
                          "give the app's user read and write access to it") from None
    if not header:
        return
    if header != _HEADER:
        raise ConfigError(
            "database", str(path), f"is not a SQLite database (it starts with {header[:8]!r})",
            "point database= at the SQLite file, or move this file away so that it is "
            "restored from the replica or created afresh",
        )
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5) as conn:
            conn.execute("PRAGMA schema_version").fetchone()
        conn.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return  # another worker is writing to it: a database all right
        raise ConfigError("database", str(path), f"cannot be opened by SQLite ({exc})",
                          "repair it (sqlite3 .recover) or move it away so that it is "
                          "restored from the replica") from None


def in_wal_mode(path: Path) -> bool | None:
    """Whether the database file is in WAL mode (its header's read and write versions
    are 2); None when it cannot be read yet. Litestream switches a database to WAL and
    cannot replicate one that an app connection has switched back."""
    try:
        with path.open("rb") as file:
            header = file.read(20)
    except OSError:
        return None
    if len(header) < 20 or not header.startswith(_HEADER):
        return None
    return header[18:20] == b"\x02\x02"


def install_pragmas(database: Any) -> int:
    """For each SQLAlchemy engine given as ``database=``: every new connection gets
    ``busy_timeout = 5000`` (Litestream's checkpoints take brief locks; Python's sqlite3
    already waits 5 s unless the app lowered ``timeout``) and ``synchronous = NORMAL``
    (what SQLite advises with WAL, and Rails' default: no corruption, far fewer fsyncs).
    SQLAlchemy is imported only when an engine is there. Returns how many engines."""
    handles = database if isinstance(database, list | tuple) and not hasattr(
        database, "_fields") else [database]
    engines: list[Any] = [getattr(h, "sync_engine", h) for h in handles]
    engines = [e for e in engines if hasattr(e, "dialect") and hasattr(e, "url")
               and str(e.url.drivername).startswith("sqlite")]
    if engines:
        event = importlib.import_module("sqlalchemy.event")
        for engine in engines:
            if not event.contains(engine, "connect", _set_pragmas):
                event.listen(engine, "connect", _set_pragmas)
    return len(engines)


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()

