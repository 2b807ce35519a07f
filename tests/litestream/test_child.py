"""The process room: one child's log pump and its aclose(), with small fake children
(the real Litestream's readiness and flush are proven in tests/integration/)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from asgi_litestream._litestream.control import ControlClient
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._litestream.process import LitestreamProcess, stop_process

pytestmark = pytest.mark.anyio


async def spawn(tmp_path: Path, script: str, task_group: anyio.abc.TaskGroup,
                log: LitestreamLog) -> LitestreamProcess:
    path = tmp_path / "child.py"
    path.write_text(script)
    process = await anyio.open_process([sys.executable, str(path)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    child = LitestreamProcess(process, name="test", control=ControlClient(tmp_path / "s"),
                              log=log)
    task_group.start_soon(child._pump_logs)
    return child


STUBBORN = """\
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print('{"level":"INFO","msg":"up"}', flush=True)
time.sleep(60)
"""

CHATTY = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
line = '{"level":"INFO","msg":"%s"}' % ("x" * 200)
for _ in range(2000):  # ~420 KB: far past the pipe's 64 KB
    print(line)
sys.stdout.flush()
print('{"level":"ERROR","msg":"last words","db":"app.db"}', flush=True)
time.sleep(60)
"""


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM, then SIGKILL once the grace is over; reaped, and the warning says so."""
    async with anyio.create_task_group() as tg:
        child = await spawn(tmp_path, STUBBORN, tg, LitestreamLog([]))
        await anyio.sleep(0.3)
        started = time.monotonic()
        await child.aclose(grace=0.5)
        assert time.monotonic() - started >= 0.5
    assert child.returncode == -signal.SIGKILL
    assert "did not stop within 0.5s; killing it" in caplog.text


async def test_aclose_finishes_even_when_cancelled(tmp_path: Path) -> None:
    """A cancelled close still terminates and reaps the child (one shield)."""
    async with anyio.create_task_group() as tg:
        child = await spawn(tmp_path, STUBBORN, tg, LitestreamLog([]))
        await anyio.sleep(0.3)
        with anyio.move_on_after(0.05):
            await child.aclose(grace=0.3)
    assert child.returncode == -signal.SIGKILL


async def test_output_is_drained_so_the_child_never_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hundreds of KB of log lines flow through; the child then stops on SIGTERM at once,
    and its error line is kept for the status (per database too)."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    log = LitestreamLog([])
    async with anyio.create_task_group() as tg:
        child = await spawn(tmp_path, CHATTY, tg, log)
        with anyio.fail_after(10):
            while "last words" not in log.tail():
                await anyio.sleep(0.01)
        await child.aclose(grace=5)
    assert child.returncode == 0
    assert log.errors_of("app.db") == ["last words db=app.db"]
    assert sum("xxxx" in r.getMessage() for r in caplog.records) == 2000


async def test_the_shared_stop_kills_at_once_without_grace(tmp_path: Path) -> None:
    """stop_process (a replicate's and a follower's alike): grace 0 means SIGKILL at
    once, no SIGTERM wait and no "did not stop" warning; the child is reaped."""
    path = tmp_path / "child.py"
    path.write_text(STUBBORN)
    process = await anyio.open_process([sys.executable, str(path)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    overdue: list[bool] = []
    started = time.monotonic()
    await stop_process(process, grace=0, on_overdue=lambda: overdue.append(True))
    assert time.monotonic() - started < 0.5
    assert process.returncode == -signal.SIGKILL and overdue == []


async def test_the_shared_stop_tells_when_the_grace_ran_out(tmp_path: Path) -> None:
    """Past the grace, on_overdue is told before the SIGKILL; drained is awaited before
    the reap."""
    path = tmp_path / "child.py"
    path.write_text(STUBBORN)
    process = await anyio.open_process([sys.executable, str(path)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await anyio.sleep(0.3)  # its SIGTERM handler is set
    events: list[str] = []

    async def drained() -> None:
        events.append(f"drained {process.returncode}")

    await stop_process(process, grace=0.3, on_overdue=lambda: events.append("overdue"),
                       drained=drained)
    assert events == ["overdue", f"drained {-signal.SIGKILL}"]
