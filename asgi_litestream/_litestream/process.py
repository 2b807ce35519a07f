"""One `litestream replicate` process: spawn, log pump, readiness, flush, close; and the
log pump and the stop every Litestream child shares (`restore -f` too).

The mechanism only (uvicorn's ``Process`` beside its ``Multiprocess``): when to start,
restart or stop it is the supervisor's business. Its command line is in commands.py.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.abc

from .._config.databases import Database
from .._exceptions import StartupError
from .control import ControlClient, ControlError, SyncResult
from .logs import LitestreamLog

logger = logging.getLogger("asgi_litestream")

_READY_POLL = 0.0005  # Litestream is up in ~25 ms: a coarser poll shows in startup
_FLUSHES_AT_ONCE = 16  # a folder may hold thousands: one by one would take minutes
_FLUSH_LINES = 10  # past this many databases, one summary line rather than one each
_MAX_LINE = 64 * 1024
# After SIGKILL the kernel reaps at once; this only bounds the wait for the last
# log lines, so that closing can never hang.
REAP_LIMIT = 2.0

class LitestreamProcess:
    """A running, ready `litestream replicate`. Build it with :meth:`start`."""

    def __init__(self, process: anyio.abc.Process, *, name: str, control: ControlClient,
                 log: LitestreamLog) -> None:
        self.name = name
        self.pid = process.pid
        self.version: str | None = None
        self.started_at = time.monotonic()
        self._process = process
        self._control = control
        self._log = log
        self._pumped = anyio.Event()
        # kill_now() may come from the lease's watchdog thread. A pid is a name the
        # kernel reuses once the child is reaped (asyncio reaps from its own thread), so
        # it signals through a pidfd, which names this very process forever; the lock
        # keeps aclose() from closing the fd (and the number being reused) mid-signal.
        self._kill_lock = threading.Lock()
        self._pidfd: int | None = None
        self._closed = False  # reaped, or closed: kill_now() signals nothing
        try:
            self._pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            self._closed = True  # exited and reaped already: nothing is left to kill
        except (AttributeError, OSError):
            pass  # no pidfds here (not Linux, or a kernel before 5.3): signal the pid

    def __repr__(self) -> str:
        return f"LitestreamProcess(pid={self.pid}, returncode={self.returncode})"

    @classmethod
    async def start(
        cls, command: Sequence[str], *, name: str, env: Mapping[str, str],
        pass_fds: Sequence[int], control: ControlClient, log: LitestreamLog,
        databases: Sequence[Database], task_group: anyio.abc.TaskGroup, timeout: float,
        on_spawn: Callable[[LitestreamProcess], None] | None = None,
    ) -> LitestreamProcess:
        """Spawn Litestream and return once it is ready: the control socket answers
        with *our* child's pid and lists every database. Raises StartupError (with
        Litestream's own last error line); no child is left behind. ``on_spawn`` gets
        the child as soon as it exists, before it is ready (the lease's watchdog)."""
        try:
            process = await anyio.open_process(
                list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=dict(env),
                # Its own session: a terminal's SIGINT/SIGHUP reaches only us, and we
                # stop Litestream in order (SIGHUP would kill it with no final sync).
                start_new_session=True,
                # Litestream holds the leader lock with us, so a standby cannot start
                # a second one while this child still runs, even if we die first.
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise StartupError(f"could not start {command[0]}: {exc}. Fix: check the "
                               "binary exists and is executable (bin_path)") from exc
        child = cls(process, name=name, control=control, log=log)
        if on_spawn is not None:
            on_spawn(child)
        # Always drain: past ~64 KB of unread output Litestream blocks for good.
        task_group.start_soon(child._pump_logs)
        try:
            with anyio.fail_after(timeout):
                # A folder's databases are found by Litestream before its socket listens.
                await child._wait_ready({str(db.path) for db in databases
                                         if not db.is_folder},
                                        folders=any(db.is_folder for db in databases))
        except BaseException as exc:
            await child.aclose(grace=0)
            if isinstance(exc, TimeoutError):
                raise StartupError(
                    f"Litestream did not become ready within {timeout}s{log.tail()}. Fix: "
                    "check the replica is reachable, or raise startup_timeout") from None
            if isinstance(exc, _Exited):
                raise StartupError(f"Litestream exited with code {exc.code} during "
                                   f"startup{log.tail()}") from None
            raise
        child.started_at = time.monotonic()
        return child

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def kill_now(self) -> bool:
        """SIGKILL it at once (no final sync), from any thread; False if it was already
        closed or gone. Never reaches another process that reused its pid."""
        with self._kill_lock:
            if self._closed:
                return False
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                elif self._process.returncode is None:
                    # No pidfd (not Linux): the pid, unless it was reaped already. asyncio
                    # may reap between this check and the signal: a pid is only reused
                    # after every other pid was handed out, never within microseconds.
                    os.kill(self.pid, signal.SIGKILL)
                else:
                    return False
            except ProcessLookupError:
                return False
            return True

    async def wait(self) -> int:
        """Wait until it exits (its last log lines included); its exit code."""
        code = await self._process.wait()
        await self._drained()
        return code

    async def flush(self, databases: Sequence[Database], timeout: float,
                    on_position: Callable[[Path, SyncResult], None] | None = None) -> bool:
        """POST /sync with wait: True once every replica holds every committed txid.
        A folder's databases are the ones Litestream lists; several flush at once."""
        paths = [db.path for db in databases if not db.is_folder]
        if any(db.is_folder for db in databases):
            try:
                listed = [Path(str(d.get("path"))) for d in await self._control.databases()]
            except ControlError as exc:
                logger.error("litestream %r: final flush failed: %s", self.name, exc)
                return False
            paths += [p for p in listed if p not in paths
                      and any(db.holds(p) for db in databases)]
        failures: list[Path] = []
        limiter = anyio.CapacityLimiter(_FLUSHES_AT_ONCE)

        async def flush_one(path: Path) -> None:
            if not path.exists():
                return  # nothing was ever written, so nothing can be lost
            async with limiter:
                try:
                    with anyio.fail_after(timeout + 2):
                        result = await self._control.sync_durably(path, timeout=timeout)
                except (ControlError, TimeoutError) as exc:
                    failures.append(path)
                    logger.error("litestream %r: final flush of %s failed: %s",
                                 self.name, path, exc or "timed out")
                    return
            if on_position is not None:
                on_position(path, result)
            if len(paths) <= _FLUSH_LINES:
                logger.info("litestream %r: flushed %s (replica at txid %d)",
                            self.name, path, result.replicated_txid)

        async with anyio.create_task_group() as task_group:
            for path in paths:
                task_group.start_soon(flush_one, path)
        if len(paths) > _FLUSH_LINES and not failures:
            logger.info("litestream %r: flushed %d databases", self.name, len(paths))
        return not failures

    async def aclose(self, *, grace: float) -> None:
        """SIGTERM (Litestream syncs once more), SIGKILL only past ``grace`` seconds,
        then reap. Runs to the end even when cancelled, within one deadline."""
        def overdue() -> None:
            logger.warning("litestream %r: did not stop within %ss; killing it", self.name,
                           grace)

        try:
            await stop_process(self._process, grace=grace, on_overdue=overdue,
                               drained=self._drained)
        finally:
            self._close_pidfd()

    def _close_pidfd(self) -> None:
        with self._kill_lock:
            self._closed = True
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    async def _wait_ready(self, wanted: set[str], *, folders: bool) -> None:
        while True:
            if self.returncode is not None:
                await self._drained()
                raise _Exited(self.returncode)
            if not self._control.socket_path.exists():
                # A stat, not a connection attempt: the poll stays cheap while Go's
                # runtime starts (we share two cores with it), and the socket answers
                # from the moment its file exists (bind and listen are one call).
                await anyio.sleep(_READY_POLL)
                continue
            try:
                info = await self._control.info()
                if info.get("pid") == self.pid:
                    # /info counts the databases: when that is exactly the listed ones,
                    # no second round trip is needed to know they are all there.
                    if (not wanted or (not folders
                                       and info.get("database_count") == len(wanted))
                            or wanted <= {d.get("path")
                                          for d in await self._control.databases()}):
                        self.version = info.get("version")
                        return
            except ControlError:
                pass  # socket not up yet
            await anyio.sleep(_READY_POLL)

    async def _pump_logs(self) -> None:
        async def log(line: bytes) -> None:
            self._log.line(line, self.pid)

        await pump_lines(self._process, log, self._pumped)

    async def _drained(self) -> None:
        """Wait (briefly) until the exited child's last lines are logged."""
        with anyio.move_on_after(1):
            await self._pumped.wait()


async def stop_process(process: anyio.abc.Process, *, grace: float,
                       on_overdue: Callable[[], None] | None = None,
                       drained: Callable[[], Awaitable[None]] | None = None) -> None:
    """SIGTERM (Litestream syncs once more), SIGKILL only past ``grace`` seconds (at once
    when ``grace`` is 0; ``on_overdue`` is told first), then reap, after ``drained``
    (its last log lines). Runs to the end even when cancelled, within one deadline."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(grace + REAP_LIMIT):
        if grace > 0 and process.returncode is None:
            process.terminate()
            with anyio.move_on_after(grace):
                await process.wait()
            if process.returncode is None and on_overdue is not None:
                on_overdue()
        if process.returncode is None:
            process.kill()
        await process.wait()
        if drained is not None:
            await drained()
        await process.aclose()


async def pump_lines(process: anyio.abc.Process, on_line: Callable[[bytes], Awaitable[None]],
                     pumped: anyio.Event) -> None:
    """Hand each line of the process's output to ``on_line`` (a line longer than
    ``_MAX_LINE`` bytes in pieces) until it ends, then set ``pumped``."""
    stdout = process.stdout
    assert stdout is not None
    pending = b""
    try:
        async for chunk in stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                await on_line(line)
            if len(pending) > _MAX_LINE:
                await on_line(pending)
                pending = b""
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        if pending:
            with anyio.CancelScope(shield=True):
                await on_line(pending)
        pumped.set()


class _Exited(Exception):
    def __init__(self, code: int | None) -> None:
        self.code = code
