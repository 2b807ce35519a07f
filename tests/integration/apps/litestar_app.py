"""Litestar: wrap the application. Litestar handles the lifespan itself, before its
own middleware stack (which sees only http and websocket scopes), so the middleware
goes around the app: ``app = LitestreamLifespan(Litestar(...), ...)``."""

from __future__ import annotations

import os

from litestar import Litestar, post
from litestar.params import JSONBody

from asgi_litestream import LitestreamLifespan
from tests.integration.apps import _notes


def create_app(database: str, replica_url: str) -> LitestreamLifespan:
    @post("/notes", sync_to_thread=True)
    def create(data: JSONBody[dict[str, str]]) -> dict[str, int]:
        return _notes.created(_notes.insert(database, data["body"]))

    return LitestreamLifespan(Litestar(route_handlers=[create]), database=database,
                              replica_url=replica_url)


if "NOTES_DATABASE" in os.environ:  # under a server
    app = create_app(os.environ["NOTES_DATABASE"], os.environ["NOTES_REPLICA_URL"])
    _notes.log_to_stderr()
