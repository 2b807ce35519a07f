"""FastAPI with SQLAlchemy: ``app.add_middleware(LitestreamLifespan, database=engine)``."""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, text

from asgi_litestream import LitestreamLifespan
from tests.integration.apps import _notes


class Note(BaseModel):
    body: str


def create_app(database: str, replica_url: str) -> FastAPI:
    engine = create_engine(f"sqlite:///{database}")
    app = FastAPI()
    app.add_middleware(LitestreamLifespan, database=engine, replica_url=replica_url)

    @app.post("/notes", status_code=201)
    def create(note: Note) -> dict[str, int]:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS notes "
                              "(id INTEGER PRIMARY KEY, body TEXT)"))
            row = conn.execute(text("INSERT INTO notes (body) VALUES (:body)"),
                               {"body": note.body}).lastrowid
        return _notes.created(row)

    return app


if "NOTES_DATABASE" in os.environ:  # under a server
    app = create_app(os.environ["NOTES_DATABASE"], os.environ["NOTES_REPLICA_URL"])
    _notes.log_to_stderr()
