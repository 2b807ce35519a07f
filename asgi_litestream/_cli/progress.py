"""The progress line of a restore on a terminal: bytes written and the rate, redrawn in
place every half second, erased when the restore ends; and what it wrote, in how long.

Litestream writes the copy as ``<output>.tmp`` and renames it, and the library restores
into a temporary name beside the database (``.<name>.<something>``) before putting it in
place: the size of the largest such file beside the target is what has been written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

EVERY = 0.5  # seconds between two redraws


@dataclass(slots=True)
class Written:
    """What a restore wrote: the target's size once in place, and the seconds it took."""

    bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """``286.5 MiB in 3.0 s, 95.5 MiB/s``."""
        return (f"{size_text(self.bytes)} in {self.seconds:.1f} s, "
                f"{_rate(self.bytes, self.seconds)}")


@contextlib.contextmanager
def watching(target: Path, *, stream: TextIO | None, every: float = EVERY,
             clock: Callable[[], float] = time.monotonic) -> Iterator[Written]:
    """Around a restore into ``target``. With a ``stream`` (stdout, when it is a terminal)
    a line ``restoring app.db: 120.0 MiB, 40.0 MiB/s`` is drawn after ``every`` seconds and
    redrawn each ``every`` seconds after, then erased, so a quick restore draws none.
    The yielded record is filled in when the block ends."""
    written = Written()
    started = clock()
    stop = threading.Event()
    drawn = 0  # the width of the line on screen

    def draw(out: TextIO) -> None:
        nonlocal drawn
        while not stop.wait(every):
            so_far = in_flight(target)
            elapsed = clock() - started
            line = (f"restoring {target.name}: {size_text(so_far)}, {_rate(so_far, elapsed)}"
                    )[:max(shutil.get_terminal_size().columns - 1, 20)]
            out.write("\r" + line.ljust(drawn))
            out.flush()
            drawn = len(line)

    thread = None
    if stream is not None:
        thread = threading.Thread(target=draw, args=(stream,), daemon=True,
                                  name="asgi-litestream-progress")
        thread.start()
    try:
        yield written
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        if stream is not None and drawn:
            stream.write("\r" + " " * drawn + "\r")
            stream.flush()
        written.seconds = clock() - started
        try:
            written.bytes = target.stat().st_size
        except OSError:
            written.bytes = 0


def in_flight(target: Path) -> int:
    """The bytes written so far into the temporary files of a restore of ``target``."""
    prefix = f".{target.name}."
    largest = 0
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    largest = max(largest, entry.stat(follow_symlinks=False).st_size)
    return largest


def size_text(size: float) -> str:
    """``512 B``, ``1.5 KiB``, ``286.5 MiB``, ``1.2 GiB`` (``3072.0 GiB``: no bigger unit)."""
    if size < 1024:
        return f"{size:.0f} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _rate(size: int, seconds: float) -> str:
    return f"{size_text(size / seconds if seconds > 0 else 0)}/s"
