"""A notes app that holds a SQLAlchemy engine (a connection pool) and uses it in its
own startup (creates its table, counts the rows), behind LitestreamLifespan
configured from ASGI_LITESTREAM_* only: what a new user writes."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, durable

logging.basicConfig(level=logging.INFO,
                    format="%(process)d %(levelname)s %(name)s: %(message)s")
engine = create_engine(f"sqlite:///{os.environ['ASGI_LITESTREAM_DATABASE']}")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS notes "
                          "(id INTEGER PRIMARY KEY, body TEXT)"))
        rows = conn.execute(text("SELECT count(*) FROM notes")).scalar_one()
    logging.getLogger("engine_server").info("app startup saw %d rows", rows)
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


app = LitestreamLifespan(Starlette(routes=[Route("/notes", create, methods=["POST"]),
                                           Route("/notes", listing, methods=["GET"])],
                                   lifespan=lifespan))
