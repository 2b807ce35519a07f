"""A SIGTERM (or SIGINT) that arrives while the server waits for our startup stops it.

A server asked to stop while its lifespan startup runs does not tell the app: uvicorn
(and gunicorn's UvicornWorker) notes the signal and waits for startup to end, Granian's
worker likewise; meanwhile a restore on boot may retry an unreachable replica for
``restore_timeout`` (300 s), so the pod is SIGKILLed. The servers leave one thing to
see: they catch the signal with a Python handler in the main thread. For the duration
of one wait, :func:`unless_stopped` puts its own handler in front of theirs; it notes
the signal and always calls theirs (so the server still knows), and a small task cancels
the wait at once. The server then gets ``lifespan.startup.failed`` and exits.

Where no Python handler listens (the default action kills the process, as in a hypercorn
worker or under a test harness), or the loop does not run in the main thread (Starlette's
TestClient), nothing is installed and nothing changes. Ctrl+C's own KeyboardInterrupt
(Python's default SIGINT handler) is left alone too. The handler before ours is put back
afterwards, unless someone replaced ours meanwhile: ours then only passes the signal on.

Hooked into the middleware around the one wait that holds the server's startup (restore
on boot and Litestream's start): ``await unless_stopped(partial(task_group.start,
service.serve), name=...)``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar, cast

import anyio

from ._exceptions import StartupError

__all__ = ["unless_stopped"]

logger = logging.getLogger("asgi_litestream")

T = TypeVar("T")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often the wait looks at what the handler noted: a handler must not touch the event
# loop (it runs between any two bytecodes of it), so it only sets a field.
_POLL = 0.05


class _Watch:
    """The handler put in front of the server's for one wait."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.seen: int | None = None
        self.active = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.active and self.seen is None:
            self.seen = signum
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)


def _install() -> _Watch | None:
    """Our handler in front of every Python handler of SIGTERM/SIGINT; None when there
    is none to chain to, or this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    watch = _Watch()
    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if not callable(current) or current is signal.default_int_handler:
            continue
        try:
            signal.signal(signum, watch)
        except ValueError:  # not the main interpreter
            continue
        watch.previous[signum] = current
    return watch if watch.previous else None


def _uninstall(watch: _Watch) -> None:
    watch.active = False
    for signum, previous in watch.previous.items():
        if signal.getsignal(signum) is watch:
            signal.signal(signum, previous)


async def unless_stopped(wait: Callable[[], Awaitable[T]], *, name: str) -> T:
    """``await wait()``, cancelled as soon as the server is sent SIGTERM or SIGINT;
    then StartupError (which the middleware reports as ``lifespan.startup.failed``).
    A wait that completes is never undone: the server, told too, stops after it."""
    watch = _install()
    if watch is None:
        return await wait()
    done = False
    error: Exception | None = None
    value: T | None = None

    async def cancel_on_signal(scope: anyio.CancelScope) -> None:
        while watch.seen is None:  # noqa: ASYNC110 - set by a signal handler (see _POLL)
            await anyio.sleep(_POLL)
        logger.warning("litestream %r: %s received during startup: stopping it",
                       name, signal.Signals(watch.seen).name)
        scope.cancel()

    try:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(cancel_on_signal, task_group.cancel_scope)
            try:
                value = await wait()
                done = True
            except Exception as exc:  # raised below, plain, not in an ExceptionGroup
                error = exc
            task_group.cancel_scope.cancel()
    finally:
        _uninstall(watch)
    if error is not None:
        raise error
    if not done:
        raise StartupError(
            f"startup of Litestream {name!r} was stopped by "
            f"{signal.Signals(watch.seen or signal.SIGTERM).name}: the server is shutting "
            "down. Nothing was left running, and no database was written")
    return cast(T, value)
