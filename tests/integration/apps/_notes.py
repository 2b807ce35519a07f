"""What every framework's notes app does with its database: plain sqlite3."""

from __future__ import annotations

import logging
import os
import sqlite3


def log_to_stderr() -> None:
    """Under a server: the tests read the middleware's lines ("final flush complete")
    from the server's output. Called once the app is built, and forced: Litestar's
    default logging goes through a queue whose last lines are lost when a worker
    process exits. NOTES_BARE_LOGGING=1 leaves logging alone."""
    if os.environ.get("NOTES_BARE_LOGGING"):
        return  # as a user's app that configures no logging at all
    logging.basicConfig(level=logging.INFO, force=True,
                        format="%(process)d %(levelname)s %(name)s: %(message)s")


def insert(db: str, body: str) -> int:
    """Commit one note; return its id."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
            row = conn.execute("INSERT INTO notes (body) VALUES (?)", (body,)).lastrowid
    finally:
        conn.close()
    assert row is not None
    return row


def created(row: int) -> dict[str, int]:
    return {"id": row, "worker": os.getpid()}
