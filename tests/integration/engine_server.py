"""A notes app that holds a SQLAlchemy engine (a connection pool) and uses it in its
own startup (creates its table, counts the rows): what a new user writes. Under a
server it runs behind LitestreamLifespan configured from ASGI_LITESTREAM_* only."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, durable


def engine_app(db: Path, seen_at_startup: list[int] | None = None) -> Starlette:
    """The app on ``db``; the row count its startup saw is logged (and appended to
    ``seen_at_startup``)."""
    engine = create_engine(f"sqlite:///{db}")

    @asynccontextmanager
    async def startup(app: Starlette) -> AsyncIterator[None]:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS notes "
                              "(id INTEGER PRIMARY KEY, body TEXT)"))
            rows = conn.execute(text("SELECT count(*) FROM notes")).scalar_one()
        logging.getLogger("engine_server").info("app startup saw %d rows", rows)
        if seen_at_startup is not None:
            seen_at_startup.append(rows)
        yield
        engine.dispose()

    async def create(request: Request) -> JSONResponse:
        body = (await request.json())["body"]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})
        await durable(request)
        return JSONResponse({"ok": True}, status_code=201)

    async def listing(request: Request) -> JSONResponse:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT body FROM notes ORDER BY id")).all()
        return JSONResponse([r[0] for r in rows])

    return Starlette(routes=[Route("/notes", create, methods=["POST"]),
                             Route("/notes", listing, methods=["GET"])], lifespan=startup)


if "ASGI_LITESTREAM_DATABASE" in os.environ:  # under a server
    logging.basicConfig(level=logging.INFO,
                        format="%(process)d %(levelname)s %(name)s: %(message)s")
    app = LitestreamLifespan(engine_app(Path(os.environ["ASGI_LITESTREAM_DATABASE"])))
