"""One `litestream restore -f` process: its command line, its output read, its stop.

The mechanism only (like ``_litestream/process.py`` for `litestream replicate`): when to start,
restart or restore afresh is the :class:`~.follower.Follower`'s business.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from .._litestream.process import PDEATHSIG_EXEC, REAP_LIMIT, find_setpriv
from .._litestream.replica_errors import ReplicaFailure, classify

logger = logging.getLogger("asgi_litestream")

# One key=value of Go's slog text format (values with spaces are Go-quoted).
_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def follow_command(binary: Path, output: Path, source: Sequence[str], *,
                   interval: float) -> list[str]:
    """`litestream restore -f` into ``output``, from ``source`` (a replica URL, or
    ``-config FILE DB_PATH``), wrapped on Linux like ``replicate_command``: the kernel
    sends it SIGTERM if the app dies without stopping it."""
    command = [str(binary), "restore", "-f", "-if-replica-exists",
               "-follow-interval", _duration(interval), "-o", str(output), *source]
    if not sys.platform.startswith("linux"):
        return command
    setpriv = find_setpriv()
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--", *command]
    return [sys.executable, "-I", "-S", "-c", PDEATHSIG_EXEC, str(os.getpid()), *command]


def parse_text_record(text: str) -> dict[str, str] | None:
    """One line of Litestream's slog output as a dict: text (``time=… level=INFO
    msg="…" k=v``), or JSON (``logging: {type: json}``, as our generated config asks);
    None for anything else (``Error: …`` on exit, a panic)."""
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in found.items()}
    if not text.startswith("time="):
        return None
    record: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                value = value[1:-1]
        record.setdefault(key, value)
    return record


def resume_refused(line: str) -> bool:
    """Litestream refused to go on following over the existing copy (its position is
    missing, unreadable, or not reachable from the replica's latest snapshot): only a
    fresh restore helps. A replica that could not be listed is no such verdict."""
    return "cannot resume follow mode" in line or "read txid file for crash recovery" in line


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    """A Go duration (``-follow-interval``), to the millisecond."""
    return f"{max(round(seconds * 1000), 1)}ms"


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


def lasting_failure(attempt: _Attempt, *, ever_ready: bool) -> ReplicaFailure | None:
    """Why a follower's *first* restore can never succeed, if that is why it ended (no
    such bucket, refused or missing credentials...: _litestream/replica_errors.py): no restart can
    mend it, so the follower gives up at once and says so. None: restart as usual. Once
    a copy was made, an error is the replica's weather, retried as ever."""
    if ever_ready or attempt.entered_at is not None or not attempt.final_error:
        return None
    failure = classify(attempt.final_error)
    return failure if failure.permanent else None


async def stop_process(process: anyio.abc.Process, *, grace: float, name: str,
                       path: Path) -> None:
    """SIGTERM, SIGKILL past ``grace``, reap: runs to the end, within one deadline."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(grace + REAP_LIMIT):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                logger.warning("litestream %r: the follower of %s did not stop within "
                               "%gs; killing it", name, path, grace)
                process.kill()
        await process.wait()
        await process.aclose()


