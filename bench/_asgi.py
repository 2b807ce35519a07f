"""Driving an ASGI app in-process: its lifespan (timed) and single requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from starlette.types import ASGIApp, Message, Scope


class Running:
    """An app whose lifespan has started; ``shutdown()`` is timed and idempotent."""

    def __init__(self, state: dict[str, Any], startup_s: float,
                 to_app: anyio.abc.ObjectSendStream[Message],
                 from_app: anyio.abc.ObjectReceiveStream[Message]) -> None:
        self.state = state
        self.startup_s = startup_s
        self.shutdown_s: float | None = None
        self._to_app = to_app
        self._from_app = from_app

    async def shutdown(self) -> float:
        """lifespan.shutdown → lifespan.shutdown.complete, in seconds."""
        if self.shutdown_s is None:
            start = time.perf_counter()
            await self._to_app.send({"type": "lifespan.shutdown"})
            reply = await self._from_app.receive()
            self.shutdown_s = time.perf_counter() - start
            if reply["type"] != "lifespan.shutdown.complete":
                raise RuntimeError(f"shutdown failed: {reply}")
        return self.shutdown_s


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[Running]:
    """Run ``app``'s lifespan as a server does, timing lifespan.startup → complete."""
    to_app, inbox = anyio.create_memory_object_stream[Message](4)
    outbox, from_app = anyio.create_memory_object_stream[Message](4)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "state": {}}

    async def run() -> None:
        await app(scope, inbox.receive, outbox.send)

    async with anyio.create_task_group() as task_group, to_app, from_app, inbox, outbox:
        task_group.start_soon(run)
        start = time.perf_counter()
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {reply.get('message')}")
        running = Running(scope["state"], time.perf_counter() - start, to_app, from_app)
        try:
            yield running
        finally:
            with anyio.CancelScope(shield=True):
                await running.shutdown()


async def call(app: ASGIApp, path: str) -> int:
    """One GET straight into the ASGI app (no server, no socket); its status code."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()  # like a server: nothing more until the client leaves
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status
