"""A small notes API on SQLite, continuously backed up by Litestream.

By default it replicates to a local folder (``data/replica`` beside this file), so
it runs with no cloud account. Point it at S3 with the standard variables::

    ASGI_LITESTREAM_REPLICA_URL='s3://my-bucket/notes' \
    LITESTREAM_ACCESS_KEY_ID=... LITESTREAM_SECRET_ACCESS_KEY=... \
    bash examples/fastapi_app/run.sh
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from asgi_litestream import LitestreamLifespan, Supervisor, durable

# Show what Litestream does (its own log lines arrive on the "asgi_litestream" logger).
logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")

DATA = Path(os.environ.get("NOTES_DATA_DIR", Path(__file__).parent / "data")).absolute()
DATA.mkdir(parents=True, exist_ok=True)
DATABASE = os.environ.get("ASGI_LITESTREAM_DATABASE", str(DATA / "notes.db"))
REPLICA_URL = os.environ.get("ASGI_LITESTREAM_REPLICA_URL", f"file://{DATA}/replica")


class NoteIn(BaseModel):
    body: str


class Note(NoteIn):
    id: int


def connection() -> Iterator[sqlite3.Connection]:
    # Litestream holds a read transaction to control checkpoints: wait for locks.
    conn = sqlite3.connect(DATABASE, timeout=5)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        yield conn
    finally:
        conn.close()


def litestream(request: Request) -> Supervisor:
    supervisor: Supervisor = request.state.litestream
    return supervisor


Connection = Annotated[sqlite3.Connection, Depends(connection)]

app = FastAPI(title="notes")
app.add_middleware(LitestreamLifespan, database=DATABASE, replica_url=REPLICA_URL)


@app.post("/notes", status_code=201)
def create_note(note: NoteIn, db: Connection) -> Note:
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        cursor = db.execute("INSERT INTO notes (body) VALUES (?)", (note.body,))
    return Note(id=cursor.lastrowid or 0, body=note.body)


@app.post("/notes/durable", status_code=201)
async def create_note_durably(note: NoteIn, request: Request) -> Note:
    """Answered only once the note is in the replica (503 if it cannot get there)."""
    for db in connection():
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
            cursor = db.execute("INSERT INTO notes (body) VALUES (?)", (note.body,))
    await durable(request, timeout=5)
    return Note(id=cursor.lastrowid or 0, body=note.body)


@app.get("/notes")
def list_notes(db: Connection) -> list[Note]:
    db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    rows = db.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    return [Note(id=row[0], body=row[1]) for row in rows]


@app.get("/backup")
def backup(supervisor: Annotated[Supervisor, Depends(litestream)]) -> dict[str, object]:
    """The same status the middleware serves, reached from a handler."""
    return supervisor.status()
