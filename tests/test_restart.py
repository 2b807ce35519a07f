"""The restart policy: exits in, decisions out. No process, no private state."""

from __future__ import annotations

from asgi_litestream._litestream.restart import GiveUp, Restart, RestartPolicy, backoff_delay


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
