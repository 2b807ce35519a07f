"""The restart policy: exits in, decisions out; and the one loop that applies it, driven
by a scripted run. No process, no private state."""

from __future__ import annotations

import time

import pytest

from asgi_litestream._litestream.restart import (
    Exited,
    GiveUp,
    Restart,
    RestartPolicy,
    backoff_delay,
    run_restarting,
)


def policy(**options: float) -> RestartPolicy:
    values = {"max_restarts": 100, "restart_window": 60.0, "max_backoff": 30.0, **options}
    return RestartPolicy(max_restarts=int(values["max_restarts"]),
                         restart_window=values["restart_window"],
                         max_backoff=values["max_backoff"])


def test_backoff_is_immediate_then_doubles_up_to_the_cap() -> None:
    """0, 0.5, 1, 2, 4 ... capped at max_backoff."""
    assert [backoff_delay(n, 3.0) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_crashes_in_a_row_back_off_and_a_stable_run_resets_them() -> None:
    """A child that ran a while restarts at once; failed respawns keep backing off."""
    p = policy()
    assert p.on_exit(at=100.0, ran_for=60.0) == Restart(delay=0.0)
    assert p.on_exit(at=100.1, ran_for=None) == Restart(delay=0.5)  # the respawn failed
    assert p.on_exit(at=100.7, ran_for=0.1) == Restart(delay=1.0)
    assert p.on_exit(at=200.0, ran_for=90.0) == Restart(delay=0.0)


def test_more_exits_than_max_restarts_in_the_window_gives_up() -> None:
    """max_restarts=2: the third exit within the window means give up."""
    p = policy(max_restarts=2, restart_window=60)
    assert isinstance(p.on_exit(at=0.0, ran_for=20.0), Restart)
    assert isinstance(p.on_exit(at=1.0, ran_for=20.0), Restart)
    assert p.on_exit(at=2.0, ran_for=20.0) == GiveUp(exits=3)


def test_exits_older_than_the_window_do_not_count() -> None:
    """Exits spread wider than restart_window never add up to giving up."""
    p = policy(max_restarts=1, restart_window=10)
    assert all(isinstance(p.on_exit(at=t * 11.0, ran_for=11.0), Restart) for t in range(5))


def test_reset_forgets_every_exit() -> None:
    """After reset (an explicit start), the count and the backoff start over."""
    p = policy(max_restarts=1)
    p.on_exit(at=0.0, ran_for=None)
    assert isinstance(p.on_exit(at=1.0, ran_for=None), GiveUp)
    p.reset()
    assert p.on_exit(at=2.0, ran_for=None) == Restart(delay=0.0)


class Script:
    """A run_once that plays back how each run ends, and records what the loop did."""

    def __init__(self, *ends: Exited | None) -> None:
        self.ends = list(ends)
        self.events: list[tuple[str, object]] = []

    async def run_once(self, restart: bool) -> Exited | None:
        self.events.append(("restart" if restart else "first", None))
        return self.ends.pop(0)

    def on_restart(self, exited: Exited, decision: Restart) -> None:
        self.events.append(("restarting", (exited.code, decision.delay)))

    def on_give_up(self, exited: Exited, decision: GiveUp) -> None:
        self.events.append(("gave up", (exited.code, decision.exits)))

    async def sleep(self, delay: float) -> None:
        self.events.append(("slept", delay))


@pytest.mark.anyio
async def test_the_loop_restarts_after_each_delay_until_the_policy_gives_up() -> None:
    """Each unasked exit is judged: told, slept, run again; past the budget, given up
    (the verdict returned, no further run)."""
    script = Script(Exited(1, ran_for=None), Exited(2, ran_for=None), Exited(3, ran_for=0.1))
    verdict = await run_restarting(script.run_once, policy(max_restarts=2),
                                   on_restart=script.on_restart,
                                   on_give_up=script.on_give_up, sleep=script.sleep)
    assert verdict == GiveUp(exits=3)
    assert script.events == [
        ("first", None), ("restarting", (1, 0.0)), ("slept", 0.0),
        ("restart", None), ("restarting", (2, 0.5)), ("slept", 0.5),
        ("restart", None), ("gave up", (3, 3))]


@pytest.mark.anyio
async def test_a_run_that_ends_on_purpose_ends_the_loop_uncounted() -> None:
    """None (stopped, fenced, no longer wanted): the loop returns, the policy untouched."""
    p = policy(max_restarts=2)
    script = Script(Exited(1, ran_for=20.0), None)
    assert await run_restarting(script.run_once, p, on_restart=script.on_restart,
                                on_give_up=script.on_give_up, sleep=script.sleep) is None
    assert [name for name, _ in script.events] == ["first", "restarting", "slept", "restart"]
    # One exit counted, not two: a second one within the window is still restarted.
    assert isinstance(p.on_exit(at=time.monotonic(), ran_for=20.0), Restart)
