"""The app's own lifespan inside ours, and the gate that keeps its requests out until
its databases are in place.

The lifespan onion, as the server sees it::

    server: lifespan.startup ─► we start Litestream (ready) ─► inner app starts
    server ◄─ startup.complete ◄────────────────────────────── inner app
    server: lifespan.shutdown ─────────────────────────────► inner app stops writing
    inner app ─► shutdown.complete (held) ─► we flush + stop Litestream ─► server

With a lease (``lease=True``) or as a follower, getting the databases in place may
take as long as another host holds the lease, or a big first copy takes. The server's
startup does not wait for that: gunicorn kills a worker silent for 30 s, hypercorn
fails a startup after 60 s, and a server inside its startup answers no probe and
often no SIGTERM. So the server is told "started" at once, our routes answer (503,
with the state), every other request gets 503 with ``Retry-After`` (the *gate*), and
the inner app's own startup runs only once the databases are in place::

    server: lifespan.startup ─► startup.complete ─► (gate: 503) ─► lease, restore ─►
        inner app starts ─► (gate open) ...
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._litestream.workdir import Workdir

logger = logging.getLogger("asgi_litestream")


class Gate:
    """Shut (``state`` set: what the app waits for) until the app has started."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: Callable[[], str] | None = None

    async def refuse(self, scope: Scope, send: Send) -> None:
        """The answer while shut: 503 and ``Retry-After`` (a websocket: close 1013)."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # "try again later"
            return
        assert self.state is not None
        await _not_yet(self.state(), send)


async def run_inner_lifespan(
    app: ASGIApp, gate: Gate, close: Callable[[], Awaitable[None]], name: str,
    workdir: Workdir,
    scope: Scope, receive: Receive, send: Send, startup: Message, *,
    in_place: Callable[[], Awaitable[object]], placed_now: Callable[[], bool],
    state: Callable[[], str],
    on_app_start: Callable[[], None] | None = None,
) -> Exception | None:
    """Run the inner app's lifespan inside ours, once the databases are in place;
    hold its shutdown reply until Litestream has flushed, so the server does not
    exit before the replica has every row. Returns the inner app's own error, if
    any, for the caller to raise."""
    held: list[Message] = []
    startup_replied = False  # to the server
    app_replied = False  # by the inner app, to us
    given_startup = False
    server_said: list[Message] = []
    shutdown = anyio.Event()
    inner_error: Exception | None = None

    async def listen() -> None:
        # After startup, the server has one message left for us: lifespan.shutdown.
        server_said.append(await receive())
        shutdown.set()

    async def inner_receive() -> Message:
        nonlocal given_startup
        if not given_startup:
            given_startup = True
            return startup
        await shutdown.wait()
        return server_said[0]

    async def inner_send(message: Message) -> None:
        nonlocal startup_replied, app_replied
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            app_replied = True
            gate.state = None
            if not startup_replied:
                startup_replied = True
                await send(message)
        elif kind == "lifespan.startup.failed" and startup_replied:
            # The server was told "started" already (the gate): it cannot hear
            # this any more. Log it, and stop the server (see _stop_the_server).
            app_replied = True
            logger.error("litestream %r: the app's startup failed: %s", name,
                         message.get("message", ""))
            held.append({"type": "lifespan.shutdown.failed",
                         "message": f"the app's startup failed: "
                                    f"{message.get('message', '')}"})
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.complete",
                      "lifespan.shutdown.failed"):
            app_replied = True
            held.append(message)  # sent once Litestream has flushed and stopped
        else:
            await send(message)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(listen)
        if placed_now():
            placed = await _first_of(in_place, shutdown.wait)
        else:
            # Not in place yet (a lease, a first copy): start serving, behind the
            # gate, rather than hold the server's startup (the docstring says why).
            gate.state = state
            startup_replied = True
            await send({"type": "lifespan.startup.complete"})
            placed = await _first_of(in_place, shutdown.wait)
        if isinstance(placed, Exception):
            logger.error("litestream %r: %s; the app did not start", name, placed)
            if not startup_replied:
                held.append({"type": "lifespan.startup.failed", "message": str(placed)})
            else:
                inner_error = placed
                held.append({"type": "lifespan.shutdown.failed", "message": str(placed)})
                _stop_the_server(name)
        elif placed:
            if on_app_start is not None:
                on_app_start()
            try:
                await app(scope, inner_receive, inner_send)
            except Exception as exc:
                if app_replied:
                    inner_error = exc
                else:
                    # Like uvicorn: an app that raises before answering startup does
                    # not speak lifespan (Django's ASGI handler). Litestream runs
                    # regardless.
                    logger.info("litestream %r: the app does not support lifespan "
                                "(%s); running Litestream for it anyway", name, exc)
                    gate.state = None
            if held and held[0]["type"] == "lifespan.shutdown.failed" and not shutdown.is_set():
                # The app failed to start behind the gate: nothing serves; stop.
                inner_error = inner_error or RuntimeError(held[0]["message"])
                _stop_the_server(name)
            failed_to_start = bool(held) and held[0]["type"] == "lifespan.startup.failed"
            if not startup_replied and not failed_to_start:
                startup_replied = True  # an app that does not speak lifespan
                await send({"type": "lifespan.startup.complete"})
        if startup_replied:
            await shutdown.wait()  # the server's lifespan.shutdown
        task_group.cancel_scope.cancel()
    await close()
    # Before the reply, not after: uvicorn (one process) re-raises SIGTERM as
    # soon as it has shutdown.complete, and nothing of ours runs past that.
    workdir.remove()
    gate.state = None
    if not held:
        held = [{"type": "lifespan.shutdown.failed", "message": str(inner_error)}
                if inner_error is not None else {"type": "lifespan.shutdown.complete"}]
    for message in held:
        await send(message)
    return inner_error


async def _first_of(in_place: Callable[[], Awaitable[object]],
                    shutdown: Callable[[], Awaitable[object]]) -> bool | Exception:
    """True: in place; an Exception: getting there failed; False: the server asked to
    shut down first."""
    result: bool | Exception = False

    async def placed() -> None:
        nonlocal result
        try:
            await in_place()
            result = True
        except Exception as exc:
            result = exc
        task_group.cancel_scope.cancel()

    async def stopping() -> None:
        nonlocal result
        await shutdown()
        result = False
        task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(placed)
        task_group.start_soon(stopping)
    return result


def _stop_the_server(name: str) -> None:
    """Ask the server to stop as an operator would, with SIGTERM, when the server
    listens for it (uvicorn, hypercorn, granian, gunicorn's workers all do; uvicorn
    then exits by that signal, a non-zero status). Under a test harness with no
    handler, the gate stays shut instead (503) and the error is in the log."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, None):
        logger.error("litestream %r: the app is not serving (503) and nothing listens for "
                     "SIGTERM here: stop the process", name)
        return
    logger.error("litestream %r: stopping the server (SIGTERM to pid %d)", name, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


async def _not_yet(state: str, send: Send) -> None:
    """The gate's answer while the databases are not in place yet."""
    body = f"starting: {state}; not serving until the databases are in place\n".encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})
