"""Reading /proc: process trees, identity, memory and CPU time (Linux)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time): unlike a bare pid, never names a later process."""
    try:
        return pid, int(_stat_fields(pid)[19])
    except OSError:
        return None


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def is_litestream(pid: int) -> bool:
    """A live (not zombie) process whose executable is litestream."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = _stat_fields(pid)[0]
    except OSError:
        return False
    return state != "Z" and argv0.endswith(b"litestream")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process, every thread (in 10 ms ticks)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def watch_children(root: int, every: float = 0.01) -> Iterator[set[int]]:
    """Every descendant of ``root`` seen while the block runs, sampled every ``every`` s
    (a process spawned per request would be caught in flight under load)."""
    seen: set[int] = set(descendants(root))
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.update(descendants(root))
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
