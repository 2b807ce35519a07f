"""What we check about the database file itself before Litestream touches it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError

_HEADER = b"SQLite format 3\x00"

# Never open() the database file ourselves: SQLite's locks are POSIX advisory locks,
# which belong to the process, and closing *any* descriptor of the file drops every
# lock the process holds on it, those of the app's open transactions included (then a
# checkpoint can run under them and committed rows are lost). SQLite's own connections
# share their locks safely, so every look at the file goes through SQLite. (Measured:
# a header read per health poll lost rows under uvicorn --workers 3.)


def check_database_file(path: Path) -> None:
    """Refuse an existing file that is not a SQLite database, or one SQLite cannot
    read: Litestream would fail on it, or replicate garbage over a good backup. A
    missing or empty file is fine (SQLite creates it)."""
    if not path.exists():
        return
    import sqlite3  # at startup, in preflight's thread: not at import

    try:
        _pragma(path, "schema_version")
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return  # another worker is writing to it: a database all right
        raise ConfigError(
            "database", str(path), f"is not a SQLite database SQLite can read ({exc})",
            "point database= at the SQLite file; repair it (sqlite3 .recover), or move it "
            "away so that it is restored from the replica or created afresh",
        ) from None


def in_wal_mode(path: Path) -> bool | None:
    """Whether the database is in WAL mode; None when it cannot be asked yet. Litestream
    switches a database to WAL and cannot replicate one switched back."""
    if not path.exists():
        return None
    import sqlite3

    try:
        return str(_pragma(path, "journal_mode")).lower() == "wal"
    except sqlite3.Error:
        return None


def _pragma(path: Path, name: str) -> object:
    import sqlite3

    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(f"PRAGMA {name}").fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def engines_in(database: Any) -> list[Any]:
    """The SQLAlchemy engines (sync or async) given as ``database=``, as given."""
    handles = database if isinstance(database, list | tuple) and not hasattr(
        database, "_fields") else [database]
    return [h for h in handles if hasattr(getattr(h, "sync_engine", h), "dialect")
            and hasattr(h, "url") and str(h.url.drivername).startswith("sqlite")]


async def dispose_pools(engines: list[Any]) -> None:
    """Drop every pooled connection, so the next checkout opens the file anew (a
    follower's fresh copy was renamed over the one they held open)."""
    for engine in engines:
        result = engine.dispose()
        if hasattr(result, "__await__"):  # an AsyncEngine
            await result


def install_pragmas(database: Any) -> int:
    """For each SQLAlchemy engine given as ``database=``: every new connection gets
    ``busy_timeout = 5000`` (Litestream's checkpoints take brief locks; Python's sqlite3
    already waits 5 s unless the app lowered ``timeout``) and ``synchronous = NORMAL``
    (what SQLite advises with WAL, and Rails' default: no corruption, far fewer fsyncs).
    SQLAlchemy is imported only when an engine is there. Returns how many engines."""
    engines = [getattr(e, "sync_engine", e) for e in engines_in(database)]
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

