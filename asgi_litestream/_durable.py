"""Durable acknowledgement: wait until a commit is in the replica, sharing syncs.

Group commit: while one sync is in flight, callers that arrive join the *next*
one, which starts only after they arrived; so no caller is ever released by a
sync that began before its own commit, and under load there is one sync in flight
plus one forming, never one sync per request.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ._exceptions import SyncError

T = TypeVar("T")


class _Round:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupSync:
    """Runs ``sync_once`` in rounds that every concurrent caller shares."""

    def __init__(self, sync_once: Callable[[], Awaitable[Any]],
                 task_group: anyio.abc.TaskGroup) -> None:
        self._sync_once = sync_once
        self._task_group = task_group
        self._forming: _Round | None = None  # the round new callers join
        self._running = False
        self.rounds = 0  # syncs actually sent: far fewer than callers under load

    async def wait(self, timeout: float) -> Any:
        """Return the result of a sync that started after this call began."""
        if self._forming is None:
            self._forming = _Round()
            if not self._running:
                self._running = True
                # In the supervisor's task group: a caller that gives up (timeout,
                # client gone) must not cancel the round the others wait on.
                self._task_group.start_soon(self._run_rounds)
        joined = self._forming
        with anyio.move_on_after(timeout):
            await joined.done.wait()
        if not joined.done.is_set():
            raise SyncError(f"the replica did not confirm the commit within {timeout}s")
        if joined.error is not None:
            raise joined.error
        return joined.result

    async def _run_rounds(self) -> None:
        try:
            while self._forming is not None:
                current, self._forming = self._forming, None
                self.rounds += 1
                try:
                    current.result = await self._sync_once()
                except Exception as exc:
                    current.error = exc
                except BaseException:
                    # Cancelled (shutdown): its callers must not read it as success.
                    current.error = SyncError("the sync was cancelled (shutting down)")
                    raise
                finally:
                    current.done.set()
        finally:
            self._running = False


async def durable(request: Request, *, timeout: float | None = None,
                  name: str | None = None) -> dict[str, int]:
    """Wait in a handler until its commits are in the replica; 503 if they cannot be.

    Call it after your transaction commits and before returning the response::

        await asgi_litestream.durable(request)

    Returns ``{database path: replicated txid}``. Raises Starlette's
    ``HTTPException(503)`` (rendered by Starlette and FastAPI) when Litestream is
    down or the replica does not confirm within ``timeout``.
    """
    from ._registry import get_supervisor

    supervisor = get_supervisor(name) if name else request.state.litestream
    try:
        positions: dict[str, int] = await supervisor.sync(timeout=timeout)
    except SyncError as exc:
        raise HTTPException(503, detail=f"not durable: {exc}",
                            headers={"retry-after": "1"}) from exc
    return positions


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
