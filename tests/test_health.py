"""Replication delay, the health measure: pure, no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_litestream._databases import Database
from asgi_litestream._health import DatabaseHealth, overall_health


def health() -> DatabaseHealth:
    return DatabaseHealth(database=Database(path=Path("/data/app.db"),
                                            replica_url="s3://bucket/app"))


def test_unknown_before_the_first_poll() -> None:
    """No poll yet: delay and health are unknown (None), not unhealthy."""
    h = health()
    assert h.delay(100.0) is None
    assert h.healthy(100.0, 10) is None


def test_caught_up_means_zero_delay() -> None:
    """A replica holding every local position has no delay, however long ago."""
    h = health()
    h.observe(5, 5, now=0.0)
    assert h.delay(1000.0) == 0.0
    assert h.healthy(1000.0, 10) is True


def test_steady_load_delay_is_the_age_of_the_oldest_missing_change() -> None:
    """Under load the replica is always a little short, yet the delay stays small:
    it counts from when the first missing position was seen, not from the last
    moment the replica held everything."""
    h = health()
    for second in range(100):  # each poll: 20 new commits, the replica 1 short
        txid = 20 * (second + 1)
        h.observe(txid, txid - 1, now=float(second))
    assert h.lag() == 1
    assert h.delay(99.5) == 0.5
    assert h.healthy(99.5, 3) is True


def test_stall_grows_the_delay_and_recovery_clears_it() -> None:
    """The replica stuck at 10 while commits go on: the delay grows from the first
    position it missed; once it catches up past that, the delay drops."""
    h = health()
    h.observe(10, 10, now=0.0)
    h.observe(12, 10, now=1.0)   # txid 11-12 first seen at 1.0
    h.observe(30, 10, now=2.0)
    h.observe(50, 10, now=5.0)
    assert h.delay(6.0) == 5.0
    assert h.healthy(6.0, 3) is False
    h.observe(60, 30, now=7.0)   # replica past 12 and 30: the oldest missing is 50's
    assert h.delay(7.0) == 2.0
    h.observe(60, 60, now=8.0)
    assert h.delay(20.0) == 0.0


def test_a_poll_error_is_unhealthy_and_the_next_good_poll_clears_it() -> None:
    """A failed poll is unhealthy at once; a later successful one clears the error."""
    h = health()
    h.observe(3, 3, now=0.0)
    h.error = "POST /sync: ReadTimeout"
    assert h.healthy(0.1, 10) is False
    h.observe(3, 3, now=1.0)
    assert h.healthy(1.0, 10) is True


def test_a_position_going_back_starts_over() -> None:
    """A smaller txid means another database file (restored or replaced): the old
    positions say nothing about it."""
    h = health()
    h.observe(100, 50, now=0.0)
    h.observe(7, 7, now=50.0)
    assert h.delay(60.0) == 0.0


def test_overall_health() -> None:
    """Any unhealthy database makes the whole unhealthy; any unknown makes it unknown."""
    assert overall_health([True, True]) is True
    assert overall_health([True, None]) is None
    assert overall_health([None, False]) is False
    assert overall_health([]) is True


def test_a_database_out_of_wal_mode_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll finds the file in a rollback journal: one warning with the fix, not one per
    poll; back in WAL, a later change is warned about again."""
    import sqlite3

    import anyio

    from asgi_litestream._control import SyncResult
    from asgi_litestream._health import HealthPoller

    db = tmp_path / "app.db"

    def journal(mode: str) -> None:
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.commit()
        conn.close()

    class Control:  # what HealthPoller asks of the control socket
        async def databases(self) -> list[dict[str, str]]:
            return [{"path": str(db), "status": "replicating"}]

        async def sync(self, path: Path, *, wait: bool, timeout: float) -> SyncResult:
            return SyncResult(status="ok", txid=1, replicated_txid=1)

    poller = HealthPoller((Database(path=db, replica_url="file:///r"),), name="t", max_lag=10)

    async def polls(count: int) -> None:
        for _ in range(count):
            await poller.poll(Control())  # type: ignore[arg-type]

    journal("delete")
    anyio.run(polls, 3)
    assert caplog.text.count("is not in WAL mode") == 1
    journal("wal")
    anyio.run(polls, 1)
    journal("delete")
    anyio.run(polls, 2)
    assert caplog.text.count("is not in WAL mode") == 2
