"""Starlette: the middleware in ``middleware=[Middleware(...)]``."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan
from tests.integration.apps import _notes


def create_app(database: str, replica_url: str) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        row = _notes.insert(database, (await request.json())["body"])
        return JSONResponse(_notes.created(row), status_code=201)

    return Starlette(
        routes=[Route("/notes", create, methods=["POST"])],
        middleware=[Middleware(LitestreamLifespan, database=database, replica_url=replica_url)],
    )


if "NOTES_DATABASE" in os.environ:  # under a server
    app = create_app(os.environ["NOTES_DATABASE"], os.environ["NOTES_REPLICA_URL"])
    _notes.log_to_stderr()
