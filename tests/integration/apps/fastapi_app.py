"""FastAPI: ``app.add_middleware(LitestreamLifespan, ...)``."""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from asgi_litestream import LitestreamLifespan
from tests.integration.apps import _notes


class Note(BaseModel):
    body: str


def create_app(database: str, replica_url: str) -> FastAPI:
    app = FastAPI()
    app.add_middleware(LitestreamLifespan, database=database, replica_url=replica_url)

    @app.post("/notes", status_code=201)
    def create(note: Note) -> dict[str, int]:
        return _notes.created(_notes.insert(database, note.body))

    return app


if "NOTES_DATABASE" in os.environ:  # under a server
    app = create_app(os.environ["NOTES_DATABASE"], os.environ["NOTES_REPLICA_URL"])
    _notes.log_to_stderr()
