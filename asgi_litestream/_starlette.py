"""Starlette glue for durable acknowledgement: ``durable()`` and ``@durable_endpoint``.

The core (supervisor, group commit) never imports Starlette; this module imports the
core.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ._config.position_header import (
    POSITION_HEADER,
    format_position,
    parse_position,
    replica_key,
)
from ._exceptions import SyncError
from ._registry import get_supervisor

logger = logging.getLogger("asgi_litestream")
_told: set[str] = set()  # positions naming no database of ours, logged once each


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
    from ._follower.replica import ReadReplica  # a follower's: not imported by a primary

    replica = get_supervisor(name) if name else request.state.litestream
    if not isinstance(replica, ReadReplica):
        return
    try:
        positions = parse_position(value)
    except ValueError as exc:
        raise HTTPException(400, detail=f"bad {POSITION_HEADER}: {exc}") from None
    for key, txid in positions.items():
        path = replica.follows(key)
        if path is None:
            # Never "already here": the read would be stale and nobody would know.
            if key not in _told and len(_told) < 1024:
                _told.add(key)
                logger.warning("litestream %r: a %s names replica %s, which this follower "
                               "does not follow (it follows: %s); answering 503", replica.name,
                               POSITION_HEADER, key, ", ".join(
                                   replica_key(db.replica_url)
                                   for db in replica.settings.databases))
            raise HTTPException(503, detail=f"this replica does not follow the database "
                                f"of your last write ({key})", headers={"retry-after": "1"})
        if not await replica.wait_for(path, txid, timeout):
            raise HTTPException(503, detail=f"this replica has not caught up with your "
                                f"last write yet ({path.name} at {txid})",
                                headers={"retry-after": "1"})


def position_header(positions: Mapping[str, int], *, name: str = "litestream") -> str:
    """The value of the ``Litestream-Position`` header for ``durable()``'s result
    (``{path: replicated txid}``), on the primary: each database is named by its
    replica, which the primary and its followers share (their file names may differ),
    hashed: ``3f2a9c1b0d4e=1843``, comma-separated."""
    databases = get_supervisor(name).settings.databases
    keyed: dict[str, int] = {}
    for path, txid in positions.items():
        wanted = Path(path)
        for db in databases:
            if db.path == wanted:
                keyed[replica_key(db.replica_url)] = txid
                break
            if db.holds(wanted):
                keyed[replica_key(db.member(wanted).replica_url)] = txid
                break
        else:
            raise ValueError(f"{path!r} is not replicated by LitestreamLifespan {name!r}")
    return format_position(keyed)


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

