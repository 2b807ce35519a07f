"""The apps under test: one plain Starlette JSON app in three dressings.

``plain``     the app alone
``litestream`` the app with LitestreamLifespan (database and replica from the env)
``base_http`` the app with a BaseHTTPMiddleware that does nothing: the anchor to beat
``pure_asgi`` the app with a pure ASGI middleware that does nothing: the floor, what any
              middleware costs

uvicorn imports these as factories (``--factory bench._apps:plain``). This module
imports asgi_litestream only inside ``litestream()``, so the plain server's memory
footprint does not include it.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

JSON_PATH = "/json"
STATUS_PATH = "/_litestream/status"
METRICS_PATH = "/_litestream/metrics"


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


ROUTES = [Route(JSON_PATH, hello)]


class _DoNothing(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


class _PassThrough:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def plain() -> Starlette:
    return Starlette(routes=ROUTES)


def base_http() -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(_DoNothing)])


def pure_asgi() -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(_PassThrough)])


def litestream(database: str | None = None, replica_url: str | None = None,
               **options: Any) -> Starlette:
    """The README's integration, at default settings unless ``options`` say otherwise."""
    from asgi_litestream import LitestreamLifespan

    database = database or os.environ["BENCH_DATABASE"]
    replica_url = replica_url or os.environ["BENCH_REPLICA_URL"]
    return Starlette(routes=ROUTES, middleware=[Middleware(
        LitestreamLifespan, database=database, replica_url=replica_url, **options,
    )])


