"""A SIGTERM sent while the server waits for our startup stops the wait, and still
reaches the server's own handler, which is put back afterwards. Real signals, sent to
this process, with a stand-in for the server's handler."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import anyio
import anyio.to_thread
import pytest

from asgi_litestream import StartupError
from asgi_litestream._stop_signals import unless_stopped

pytestmark = pytest.mark.anyio


class ServerHandler:
    """What uvicorn's Server.handle_exit does: note the signal."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.seen.append(signum)


@pytest.fixture
def server_handler() -> Iterator[ServerHandler]:
    handler = ServerHandler()
    before = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield handler
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


def kill_soon(signum: int = signal.SIGTERM, after: float = 0.2) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


async def test_a_sigterm_stops_the_wait_at_once(server_handler: ServerHandler) -> None:
    """The wait (a restore retrying for minutes) ends within a moment of SIGTERM, as a
    StartupError naming it; the server's handler saw the signal and is back in place."""
    cancelled = anyio.Event()

    async def long_startup() -> None:
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()

    began = time.monotonic()
    kill_soon()
    with pytest.raises(StartupError, match="stopped by SIGTERM: the server is shutting down"):
        await unless_stopped(long_startup, name="t")
    assert time.monotonic() - began < 2
    assert cancelled.is_set()
    assert server_handler.seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is server_handler
    assert signal.getsignal(signal.SIGINT) is server_handler


async def test_ctrl_c_stops_it_too(server_handler: ServerHandler) -> None:
    """SIGINT, under a server that handles it (uvicorn does), likewise."""
    kill_soon(signal.SIGINT)
    with pytest.raises(StartupError, match="SIGINT"):
        await unless_stopped(lambda: anyio.sleep(30), name="t")
    assert server_handler.seen == [signal.SIGINT]


async def test_a_finished_startup_is_not_undone(server_handler: ServerHandler) -> None:
    """A startup that completes returns its value; a signal after it is the server's
    business alone (it shuts down as usual)."""

    async def quick() -> str:
        return "started"

    assert await unless_stopped(quick, name="t") == "started"
    os.kill(os.getpid(), signal.SIGTERM)
    await anyio.sleep(0.05)
    assert server_handler.seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is server_handler


async def test_a_startup_error_comes_out_plain(server_handler: ServerHandler) -> None:
    """The wait's own error is raised as itself, not inside an ExceptionGroup."""

    async def failing() -> None:
        raise ValueError("the replica is gone")

    with pytest.raises(ValueError, match="the replica is gone"):
        await unless_stopped(failing, name="t")
    assert signal.getsignal(signal.SIGTERM) is server_handler


async def test_with_nobody_listening_nothing_is_installed() -> None:
    """The default action (a hypercorn worker, a test harness) and Python's own
    KeyboardInterrupt for SIGINT are left exactly as they are."""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    seen: list[object] = []

    async def look() -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(signal.getsignal(signal.SIGINT))

    await unless_stopped(look, name="t")
    assert seen == [signal.SIG_DFL, signal.default_int_handler]


async def test_outside_the_main_thread_nothing_is_installed(
    server_handler: ServerHandler
) -> None:
    """A loop in another thread (Starlette's TestClient) cannot take signals: the wait
    runs as is."""
    seen: list[object] = []

    async def look() -> None:
        seen.append(signal.getsignal(signal.SIGTERM))

    async def in_its_own_loop() -> None:
        await unless_stopped(look, name="t")

    await anyio.to_thread.run_sync(anyio.run, in_its_own_loop)
    assert seen == [server_handler]


async def test_a_handler_installed_on_top_is_left_in_place(
    server_handler: ServerHandler
) -> None:
    """Someone replaced ours meanwhile: theirs stays; ours, underneath, only passes the
    signal on to the server's."""
    later = ServerHandler()

    async def replace() -> None:
        signal.signal(signal.SIGTERM, later)

    await unless_stopped(replace, name="t")
    assert signal.getsignal(signal.SIGTERM) is later
