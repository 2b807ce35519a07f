"""A read replica of the notes app: LitestreamLifespan with role="follower" (from
ASGI_LITESTREAM_* only), reading the copy read-only, with read-your-writes."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_litestream import LitestreamLifespan, connect_readonly, read_your_writes

logging.basicConfig(level=logging.INFO,
                    format="%(process)d %(levelname)s %(name)s: %(message)s")
COPY = Path(os.environ["ASGI_LITESTREAM_DATABASE"])


async def listing(request: Request) -> JSONResponse:
    await read_your_writes(request, timeout=float(request.query_params.get("wait", 2)))
    conn = connect_readonly(COPY)
    try:
        rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
    finally:
        conn.close()
    return JSONResponse([r[0] for r in rows])


async def write(request: Request) -> JSONResponse:
    conn = connect_readonly(COPY)  # the app's mistake: writing on a follower
    try:
        conn.execute("INSERT INTO notes (body) VALUES ('oops')")
    except sqlite3.OperationalError as exc:
        return JSONResponse({"error": str(exc)}, status_code=500)
    finally:
        conn.close()
    return JSONResponse({}, status_code=201)


app = LitestreamLifespan(Starlette(routes=[Route("/notes", listing),
                                           Route("/notes", write, methods=["POST"])]))
