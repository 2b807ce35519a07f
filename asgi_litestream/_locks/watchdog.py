"""The lease's watchdog: kills Litestream when the lease could expire, from a thread.

The lease keeper renews on the event loop, and a loop stalled by a blocking call, a
long GC pause or a starved CPU would delay a fence there while another host takes the
lease over. This thread does not wait for the loop. After each successful acquire or
renewal the keeper arms it with the deadline (the monotonic time taken *before* that
call, plus the TTL, minus the fencing margin); when the deadline passes unrenewed, it
SIGKILLs the child at once. The loop still does the orderly part (the fenced state,
the log line, winning the lease back); this only makes sure nothing writes past the
deadline.

One rule: **past the deadline, the child dies**, whatever arrives later, until a new
lease re-arms it. A child registered after the deadline is killed on the spot, and a
renewal that returns late re-arms only after the old deadline was enforced.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

logger = logging.getLogger("asgi_litestream")


class Killable(Protocol):
    """What the watchdog kills: a Litestream child (_child.LitestreamProcess)."""

    @property
    def pid(self) -> int: ...

    def kill_now(self) -> bool:
        """SIGKILL it (from any thread), never another process; False if already gone."""
        ...


class Watchdog:
    """Kills the watched child at the armed deadline unless re-armed first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._deadline: float | None = None  # monotonic; None: disarmed (no lease)
        self._child: Killable | None = None
        self._thread: threading.Thread | None = None

    def may_run(self) -> bool:
        """Whether Litestream may run now: armed, and the deadline still ahead."""
        with self._cond:
            return self._deadline is not None and time.monotonic() < self._deadline

    def arm(self, deadline: float) -> None:
        """The lease is ours until ``deadline`` (monotonic): kill the child then, unless
        re-armed before."""
        with self._cond:
            killed = self._enforce()  # a deadline that passed is kept, even now
            self._deadline = deadline
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"asgi-litestream lease watchdog {self.name}",
                    daemon=True)
                self._thread.start()
            self._cond.notify()
        self._report(killed)

    def expire(self) -> None:
        """The lease is lost or could have expired: past the deadline now, so the child
        is killed at once, and may_run() is False until armed again."""
        with self._cond:
            now = time.monotonic()
            if self._deadline is None or self._deadline > now:
                self._deadline = now
            killed = self._enforce()
            self._cond.notify()
        self._report(killed)

    def disarm(self) -> None:
        """No lease any more (released, after Litestream stopped): kill nothing, and let
        the thread end. may_run() is False until armed again."""
        with self._cond:
            self._deadline = None
            self._child = None
            self._cond.notify()

    def watch(self, child: Killable | None) -> None:
        """``child`` is the Litestream to kill at the deadline; if the deadline already
        passed, it is killed now."""
        with self._cond:
            self._child = child
            killed = self._enforce()
        self._report(killed)

    def _run(self) -> None:
        killed = None
        with self._cond:
            while self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    killed = self._enforce()
                    break  # fired: watch() and arm() enforce from here on
                self._cond.wait(left)
            self._thread = None
        self._report(killed)

    def _enforce(self) -> Killable | None:
        """Under the lock: past the deadline, kill the child; the one killed."""
        child = self._child
        if (child is None or self._deadline is None
                or time.monotonic() < self._deadline or not child.kill_now()):
            return None
        self._child = None  # dealt with: a second signal would only log twice
        return child

    def _report(self, killed: Killable | None) -> None:
        # Outside the lock: a slow log handler must not hold up arm() on the loop.
        if killed is not None:
            logger.error("litestream %r: the lease is lost or could have expired: "
                         "Litestream (pid %d) killed by the watchdog, no final sync",
                         self.name, killed.pid)
