"""One `litestream restore -f` process: run to its end, its output handed on line by
line, stopped within one deadline; and what its output means.

The mechanism only (like ``_litestream/process.py`` for `litestream replicate`): when to start,
restart or restore afresh is the :class:`~.follower.Follower`'s business. Its command
line is ``_litestream/commands.py``'s, its log lines read by ``_litestream/logs.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._litestream.logs import LitestreamLog, parse_record, scrub
from .._litestream.process import REAP_LIMIT, pump_lines, stop_process
from .._litestream.replica_errors import ReplicaFailure, classify


def resume_refused(line: str) -> bool:
    """Litestream refused to go on following over the existing copy (its position is
    missing, unreadable, or not reachable from the replica's latest snapshot): only a
    fresh restore helps. A replica that could not be listed is no such verdict."""
    return "cannot resume follow mode" in line or "read txid file for crash recovery" in line


def _hex(value: Any) -> int | None:
    try:
        return int(value, 16) if isinstance(value, str) and value else None
    except ValueError:
        return None


@dataclass(slots=True)
class _Attempt:
    """What one `restore -f` process did, as its output told."""

    fresh: bool
    output: Path
    entered_at: float | None = None  # monotonic time it entered follow mode
    published: bool = False
    empty: bool = False  # exited because the replica holds no backup yet
    refused: str | None = None  # why it would not resume over the copy
    final_error: str | None = None
    code: int | None = None
    restarted: bool = False  # stopped on purpose, to start again at once (new keys)


def lasting_failure(attempt: _Attempt, *, ever_ready: bool) -> ReplicaFailure | None:
    """Why a follower's *first* restore can never succeed, if that is why it ended (no
    such bucket, refused or missing credentials...: _litestream/replica_errors.py): no restart can
    mend it, so the follower gives up at once and says so. None: restart as usual. Once
    a copy was made, an error is the replica's weather, retried as ever."""
    if ever_ready or attempt.entered_at is not None or not attempt.final_error:
        return None
    failure = classify(attempt.final_error)
    return failure if failure.permanent else None


async def follow_once(
    command: Sequence[str], attempt: _Attempt, *, env: Mapping[str, str], grace: float,
    log: LitestreamLog, secrets: Sequence[str], on_spawn: Callable[[anyio.abc.Process], None],
    on_entered: Callable[[_Attempt, int | None], Awaitable[None]],
    on_applied: Callable[[int | None], Awaitable[None]],
    on_warning: Callable[[str], None], on_overdue: Callable[[], None],
    stop: anyio.Event | None = None,
) -> None:
    """Run ``command`` until it exits, its output logged and read into ``attempt``:
    ``on_entered(attempt, txid)`` once it follows, ``on_applied(txid)`` at each update,
    ``on_warning(line)`` at an error line. Cancelled, it is stopped (SIGTERM, SIGKILL
    past ``grace``: ``on_overdue``) and reaped before this returns; so it is once
    ``stop`` is set, but then its last lines are still read and handled (a copy being
    renamed into place is not cut short). OSError: it could not be started."""
    process = await anyio.open_process(
        list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=dict(env),
        # Its own session: a terminal's SIGINT reaches only us (see _litestream/process.py).
        start_new_session=True)
    on_spawn(process)

    def last_error(fallback: str) -> str:
        return log.last_errors[-1] if log.last_errors else scrub(fallback, secrets)

    async def line(raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        record = parse_record(text)
        if record is None:
            if resume_refused(text):
                # Handled: the follower's own line says what happens next.
                reason = text.removeprefix("Error: ").removeprefix("cannot resume follow mode: ")
                attempt.refused = reason.split(";")[0]
                return
            log.line(raw, process.pid)
            if text.startswith("Error:"):
                attempt.final_error = last_error(text)
            return
        message = record.get("msg", "")
        if message == "no matching backups found":
            attempt.empty = True
            return  # once a second while waiting: the follower's own line says it
        log.record(record, process.pid)
        if record.get("level") in ("ERROR", "WARN"):
            on_warning(last_error(text))
        if message == "entering follow mode":
            attempt.entered_at = time.monotonic()
            await on_entered(attempt, _hex(record.get("txid")))
        elif message == "follow: applied updates":
            await on_applied(_hex(record.get("to_txid")))

    async def stop_when_asked(stop: anyio.Event) -> None:
        # Only signals: it exits as on a SIGTERM of ours ("follow mode stopped"), and
        # wait() below sees it; cancelled with the task group once it has.
        await stop.wait()
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            if process.returncode is None:
                process.terminate()
            await anyio.sleep(grace)
            if process.returncode is None:
                on_overdue()
                process.kill()

    try:
        async with anyio.create_task_group() as task_group:
            pumped = anyio.Event()
            # Always drain: past ~64 KB of unread output Litestream blocks for good.
            task_group.start_soon(pump_lines, process, line, pumped)
            if stop is not None:
                task_group.start_soon(stop_when_asked, stop)
            attempt.code = await process.wait()
            with anyio.move_on_after(REAP_LIMIT):
                await pumped.wait()
            task_group.cancel_scope.cancel()
    finally:
        await stop_process(process, grace=grace, on_overdue=on_overdue)
