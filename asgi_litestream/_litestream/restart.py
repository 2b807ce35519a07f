"""The restart policy: what to do when Litestream exits without being asked to; and the
one loop that applies it, to the primary's Litestream and to each follower's.

The policy is a pure function of what happened (when it exited, how long it had run),
kept apart from the process it judges (uvicorn's ``Multiprocess`` beside its
``Process``); the loop knows no process either: it is handed one run at a time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

# A child that ran this long counts as a fresh start: its next crash restarts at once.
STABLE_AFTER = 10.0
_FIRST_BACKOFF = 0.5


@dataclass(frozen=True, slots=True)
class Restart:
    """Spawn Litestream again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stay down: ``exits`` exits within the restart window is too many."""

    exits: int


class RestartPolicy:
    """Immediate restart, then capped exponential backoff while crashes come in a
    row; more than ``max_restarts`` exits within ``restart_window`` means give up."""

    def __init__(self, *, max_restarts: int, restart_window: float, max_backoff: float) -> None:
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.max_backoff = max_backoff
        self._exits: deque[float] = deque()
        self._crashes_in_a_row = 0

    def on_exit(self, *, at: float, ran_for: float | None) -> Restart | GiveUp:
        """Litestream exited at monotonic time ``at`` after running ``ran_for``
        seconds (None: it never became ready, a failed restart)."""
        stable = ran_for is not None and ran_for > STABLE_AFTER
        self._crashes_in_a_row = 1 if stable else self._crashes_in_a_row + 1
        self._exits.append(at)
        while self._exits and at - self._exits[0] > self.restart_window:
            self._exits.popleft()
        if len(self._exits) > self.max_restarts:
            return GiveUp(exits=len(self._exits))
        return Restart(delay=backoff_delay(self._crashes_in_a_row, self.max_backoff))

    def reset(self) -> None:
        """Forget every exit (an explicit start after stop or give-up)."""
        self._exits.clear()
        self._crashes_in_a_row = 0


def backoff_delay(crashes_in_a_row: int, max_backoff: float) -> float:
    """No wait before the first restart, then 0.5 s doubling up to ``max_backoff``."""
    if crashes_in_a_row <= 1:
        return 0.0
    return float(min(_FIRST_BACKOFF * 2 ** (crashes_in_a_row - 2), max_backoff))


@dataclass(frozen=True, slots=True)
class Exited:
    """How one run of Litestream ended, unasked."""

    code: int | None
    ran_for: float | None  # seconds since it became ready; None: it never did
    error: str | None = None  # its last error line, if it said one


async def run_restarting(
    run_once: Callable[[bool], Awaitable[Exited | None]], policy: RestartPolicy, *,
    on_restart: Callable[[Exited, Restart], None],
    on_give_up: Callable[[Exited, GiveUp], None],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> GiveUp | None:
    """Run Litestream again and again: ``run_once(restart)`` runs it (``restart``: after
    an exit) to its end, Exited, or None when it ended on purpose (stopped, fenced, no
    longer wanted). The policy judges each exit: ``on_restart`` then ``sleep`` the delay
    and run again, or ``on_give_up`` and return the verdict. None: a run ended on
    purpose."""
    restart = False
    while True:
        exited = await run_once(restart)
        if exited is None:
            return None
        decision = policy.on_exit(at=time.monotonic(), ran_for=exited.ran_for)
        if isinstance(decision, GiveUp):
            on_give_up(exited, decision)
            return decision
        on_restart(exited, decision)
        await sleep(decision.delay)
        restart = True
