"""Starlette glue for durable acknowledgement: ``durable()`` and ``@durable_endpoint``.

The core (supervisor, group commit) never imports Starlette; this module imports the
core.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ._exceptions import SyncError
from ._read_replica import POSITION_HEADER, ReadReplica, parse_position
from ._registry import get_supervisor


async def durable(request: Request, *, timeout: float | None = None,
                  name: str | None = None,
                  database: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Wait in a handler until its commits are in the replica; 503 if they cannot be.

    Call it after your transaction commits and before returning the response::

        await asgi_litestream.durable(request)

    ``database`` waits for that one database only (required for a folder of
    databases: name the tenant's file). Returns ``{database path: replicated txid}``.
    Raises Starlette's
    ``HTTPException(503)`` (rendered by Starlette and FastAPI) when Litestream is
    down or the replica does not confirm within ``timeout``.
    """
    supervisor = get_supervisor(name) if name else request.state.litestream
    try:
        positions: dict[str, int] = await supervisor.sync(timeout=timeout,
                                                          database=database)
    except SyncError as exc:
        raise HTTPException(503, detail=f"not durable: {exc}",
                            headers={"retry-after": "1"}) from exc
    return positions


async def read_your_writes(request: Request, *, timeout: float = 2.0,
                           name: str | None = None) -> None:
    """On a follower, in a read handler: wait until this replica holds the client's
    last write, whose position the primary handed out (``Litestream-Position``, as a
    header or a cookie: ``position_header(await durable(request))``). Raises
    ``HTTPException(503)`` with ``Retry-After`` when it does not within ``timeout``;
    returns at once without a position, or on a primary (it holds its own writes)."""
    value = request.headers.get(POSITION_HEADER) or request.cookies.get(POSITION_HEADER)
    if not value:
        return
    replica = get_supervisor(name) if name else request.state.litestream
    if not isinstance(replica, ReadReplica):
        return
    for database, txid in parse_position(value).items():
        try:
            caught_up = await replica.wait_for(database, txid, timeout)
        except KeyError:
            continue  # a database this replica does not follow
        if not caught_up:
            raise HTTPException(503, detail=f"this replica has not caught up with your "
                                f"last write yet ({database} at {txid})",
                                headers={"retry-after": "1"})


def durable_endpoint(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Decorate a Starlette endpoint: its response is sent only once its commits are
    in the replica (503 otherwise)."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        response = await endpoint(request)
        if response.status_code < 400:
            await durable(request)
        return response

    return wrapper
