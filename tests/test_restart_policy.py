"""The restart policy's state machine, without spawning anything."""

from __future__ import annotations

import time
from pathlib import Path

from asgi_litestream import Settings, State, Supervisor
from asgi_litestream._process import backoff_delay


def supervisor(tmp_path: Path, **options: object) -> Supervisor:
    settings = Settings.from_options(environ={}, database=tmp_path / "app.db",
                                     replica_url=f"file://{tmp_path}/r", **options)  # type: ignore[arg-type]
    return Supervisor(settings, binary=Path("/bin/true"), workdir=tmp_path, environ={})


def test_backoff_is_immediate_then_doubles_up_to_the_cap() -> None:
    """0, 0.5, 1, 2, 4 ... capped at max_backoff."""
    assert [backoff_delay(n, 3.0) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_crashes_in_a_row_grow_and_a_stable_run_resets_them(tmp_path: Path) -> None:
    """A child that ran a while restarts at once; failed respawns keep backing off."""
    sup = supervisor(tmp_path, max_restarts=100)
    sup._started_at = time.monotonic() - 60  # it had run for a minute
    sup._record_exit(1)
    assert sup._crashes_in_a_row == 1 and sup.state is State.RESTARTING
    sup._record_exit(1)  # the respawn failed: no run in between
    sup._record_exit(1)
    assert sup._crashes_in_a_row == 3
    assert backoff_delay(sup._crashes_in_a_row, 30) == 1.0


def test_more_exits_than_max_restarts_in_the_window_stays_down(tmp_path: Path) -> None:
    """max_restarts=2: the third exit within the window means FAILED, no more restarts."""
    sup = supervisor(tmp_path, max_restarts=2, restart_window=60)
    for _ in range(2):
        sup._record_exit(1)
        assert sup.state is State.RESTARTING
    sup._record_exit(1)
    assert sup.state is State.FAILED
    assert sup.last_exit_code == 1
