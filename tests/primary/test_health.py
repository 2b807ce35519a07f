"""Replication delay, the health measure: pure, no process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._primary.database_health import DatabaseHealth, overall_health


def health() -> DatabaseHealth:
    return DatabaseHealth(database=Database(path=Path("/data/app.db"),
                                            replica_url="s3://bucket/app"))


def test_unknown_before_the_first_poll() -> None:
    """No poll yet: delay and health are unknown (None), not unhealthy."""
    h = health()
    assert h.delay(100.0) is None
    assert h.healthy(100.0, 10) is None


def listed(at: str | None) -> dict[str, str]:
    """One /list entry; ``at`` as Litestream writes last_sync_at."""
    return {"status": "replicating", **({"last_sync_at": at} if at else {})}


T0 = 1_790_000_000.0  # a unix time
AT_T0 = "2026-09-21T14:13:20.000000000Z"  # the same moment, as Litestream writes it


def test_rfc3339_with_nanoseconds_is_read_on_every_python() -> None:
    """Litestream's nine-digit fractions parse (fromisoformat alone fails on 3.10)."""
    h = health()
    h.observe(listed("2026-09-21T14:13:20.451218973Z"), now=T0)
    assert h.synced_at is not None and abs(h.synced_at - (T0 + 0.451218973)) < 1e-6


def test_a_recent_sync_means_a_small_delay() -> None:
    """The delay is the age of Litestream's last confirmed sync."""
    h = health()
    h.observe(listed(AT_T0), now=T0 + 0.8)
    assert h.delay(T0 + 0.8) == pytest.approx(0.8)
    assert h.healthy(T0 + 0.8, 10) is True


def test_a_stall_grows_the_delay_and_a_new_sync_clears_it() -> None:
    """No new sync confirmed while polls go on: the delay grows past max_lag; the
    next confirmed sync brings it back."""
    h = health()
    for second in range(12):
        h.observe(listed(AT_T0), now=T0 + second)
    assert h.delay(T0 + 11) == 11
    assert h.healthy(T0 + 11, 10) is False
    h.observe(listed("2026-09-21T14:13:31.500000000Z"), now=T0 + 12)
    assert h.delay(T0 + 12) == pytest.approx(0.5)
    assert h.healthy(T0 + 12, 10) is True


def test_never_synced_counts_from_when_it_was_first_listed(tmp_path: Path) -> None:
    """A database Litestream lists but has never synced is behind since first seen
    (a brand-new, still empty file is not: it has nothing to lose)."""
    db = tmp_path / "new.db"
    db.write_bytes(b"SQLite format 3\x00" + bytes(100))
    h = DatabaseHealth(database=Database(path=db, replica_url="file:///r"))
    h.observe(listed(None), now=T0)
    h.observe(listed(None), now=T0 + 4)
    assert h.delay(T0 + 4) == 4
    db.write_bytes(b"")
    assert h.delay(T0 + 40) == 0.0


def test_a_poll_error_is_unhealthy_and_the_next_good_poll_clears_it() -> None:
    """A failed poll is unhealthy at once; a later successful one clears the error."""
    h = health()
    h.observe(listed(AT_T0), now=T0)
    h.error = "GET /list: ReadTimeout"
    assert h.healthy(T0, 10) is False
    h.observe(listed(AT_T0), now=T0 + 1)
    assert h.healthy(T0 + 1, 10) is True


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

    from asgi_litestream._primary.health import HealthPoller

    db = tmp_path / "app.db"

    def journal(mode: str) -> None:
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.commit()
        conn.close()

    class Control:  # what HealthPoller asks of the control socket
        async def databases(self) -> list[dict[str, str]]:
            return [{"path": str(db), "status": "replicating", "last_sync_at": AT_T0}]

        async def sync(self, path: Path, *, wait: bool, timeout: float) -> object:
            from asgi_litestream._litestream.control import SyncResult

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


def test_one_call_per_poll_for_a_folder_of_databases(tmp_path: Path) -> None:
    """A poll asks /list once and a few positions, whatever the count; a folder's
    databases appear and disappear with Litestream's list, and files outside the
    pattern are ignored."""
    import anyio

    from asgi_litestream._primary.health import HealthPoller

    folder = Database(path=tmp_path, replica_url="file:///r", pattern="*.db")
    names = [f"t{i}.db" for i in range(50)]

    class Control:
        calls = 0

        async def sync(self, path: Path, *, wait: bool, timeout: float) -> object:
            from asgi_litestream._litestream.control import SyncResult

            Control.calls += 1
            return SyncResult(status="ok", txid=3, replicated_txid=3)

        async def databases(self) -> list[dict[str, str]]:
            Control.calls += 1
            return [{"path": str(tmp_path / n), "status": "replicating",
                     "last_sync_at": AT_T0} for n in [*names, "other.sqlite"]]

    poller = HealthPoller((folder,), name="t", max_lag=10)
    anyio.run(poller.poll, Control())  # type: ignore[arg-type]
    assert Control.calls == 5
    assert sorted(h.database.path.name for h in poller.databases) == sorted(names)
    assert poller.databases[0].database.replica_url == f"file:///r/{names[0]}"
    names = names[:10]
    anyio.run(poller.poll, Control())  # type: ignore[arg-type]
    assert Control.calls == 10 and len(poller.databases) == 10


def test_whole_seconds_parsed_once_read_the_same_times() -> None:
    """The quick reading of Litestream's times (the whole second kept) gives what the
    RFC 3339 parser gives, to the last digit, and None where it fails."""
    from asgi_litestream._litestream.rfc3339 import unix_time
    from asgi_litestream._primary.database_health import _unix_time

    for stamp in ("2026-09-21T14:13:20.451218973Z", "2026-09-21T14:13:20.451218974Z",
                  "2026-09-21T14:13:20Z", "2026-09-21T14:13:20.5Z",
                  "2026-09-21T14:13:21.000000001Z", "2026-09-21T14:13:20.5+02:00",
                  "2026-09-21t14:13:20.5z", "2026-09-21T14:13:20.\u0665Z"):
        assert _unix_time(stamp) == unix_time(stamp), stamp
    for bad in ("2026-09-21T14:13:20.Z", "2026-13-21T14:13:20.5Z", "2026-09-21T14:13:20.5",
                "2026-09-21Z", "soon", ""):
        assert _unix_time(bad) is None, bad


class Clock:
    """time.time() for health.py, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class Listing:
    """The control socket of a Litestream that confirms a sync of one database at
    ``synced`` (a unix time), as its last_sync_at."""

    def __init__(self, path: Path) -> None:
        self.path, self.synced = path, T0

    async def databases(self) -> list[dict[str, str]]:
        from datetime import datetime, timezone

        from asgi_litestream._litestream.rfc3339 import format_time

        at = format_time(datetime.fromtimestamp(self.synced, timezone.utc))
        return [{"path": str(self.path), "status": "replicating", "last_sync_at": at}]

    async def sync(self, path: Path, *, wait: bool, timeout: float) -> object:
        from asgi_litestream._litestream.control import SyncResult

        return SyncResult(status="ok", txid=1, replicated_txid=1)


def poller_with_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[Any, Listing, Clock]:
    from asgi_litestream._primary import health as module

    clock = Clock(T0)
    monkeypatch.setattr(module, "time", clock)
    db = tmp_path / "app.db"
    poller = module.HealthPoller((Database(path=db, replica_url="file:///r"),), name="t",
                                 max_lag=10)
    return poller, Listing(db), clock


def test_the_history_keeps_the_worst_delay_of_each_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Litestream syncs every 2 s and every poll lands 0.05 s after a sync: each
    sample still shows the 2 s the replica waited between two syncs, not the 0.05 s a
    poll happens to see; a stall shows in full even when it ended just before the poll
    that takes the sample."""
    import anyio

    poller, control, clock = poller_with_clock(tmp_path, monkeypatch)

    async def polls(seconds: int, every: float = 2.0) -> None:
        for _ in range(int(seconds / every)):
            clock.now += every
            control.synced = clock.now - 0.05
            await poller.poll(control)

    anyio.run(polls, 40)
    [samples] = poller.history().values()
    assert len(samples) == 4
    assert samples[0][1] == pytest.approx(0.05)  # the first poll: nothing before it
    # The worst: 2 s between two syncs, and the 0.05 s before the poll saw the next one.
    assert [round(delay, 2) for _, delay in samples[1:]] == [2.05, 2.05, 2.05]
    assert poller.databases[0].delay(clock.now) == pytest.approx(0.05)  # the delay now

    async def stall() -> None:
        clock.now += 1.0
        await poller.poll(control)  # last_sync_at unchanged: the replica is stuck...
        clock.now += 7.0
        control.synced = clock.now - 0.05  # ...until 0.05 s before this poll
        await poller.poll(control)

    anyio.run(stall)
    [samples] = poller.history().values()
    assert len(samples) == 5 and round(samples[-1][1] or 0, 2) == 8.05


def test_the_snapshot_is_as_of_the_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The databases' part shows the delay at the poll's moment (as_of), read later
    or not; before any poll, every figure is unknown."""
    import anyio

    poller, control, clock = poller_with_clock(tmp_path, monkeypatch)
    [before] = poller.snapshot(lambda name: [])
    assert before.behind_s is None and before.healthy is None and poller.as_of is None
    clock.now += 1.0
    anyio.run(poller.poll, control)
    clock.now += 1.5  # read later: still as of the poll
    [after] = poller.snapshot(lambda name: ["a line"] if name == "app.db" else [])
    assert poller.as_of == T0 + 1.0
    assert after.behind_s == 1.0 and after.healthy is True
    assert after.last_errors == ("a line",) and poller.overall() is True


def test_while_watched_a_poll_makes_the_snapshot_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the status has been read, the next poll makes the databases' part as it
    ends (a request then finds it made), the same as a read would have made it."""
    import anyio

    from asgi_litestream._primary import health as module

    folder = Database(path=tmp_path, replica_url="file:///r", pattern="*.db")
    clock = Clock(T0)
    monkeypatch.setattr(module, "time", clock)
    names = [f"t{i:03d}.db" for i in range(600)]  # more than one step

    class Control(Listing):
        async def databases(self) -> list[dict[str, str]]:
            return [{"path": str(tmp_path / n), "status": "replicating",
                     "last_sync_at": AT_T0} for n in names]

    poller = module.HealthPoller((folder,), name="t", max_lag=10)
    made: list[int] = []
    status = module.DatabaseHealth.status

    def counted(self: DatabaseHealth, *args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return status(self, *args, **kwargs)

    monkeypatch.setattr(module.DatabaseHealth, "status", counted)
    clock.now += 1.0
    anyio.run(poller.poll, Control(tmp_path))
    assert not made  # nobody has read the status: nothing made
    poller.snapshot(lambda name: [])
    assert len(made) == 600
    clock.now += 2.0
    anyio.run(poller.poll, Control(tmp_path))
    assert len(made) == 1200  # made by the poll
    snapshot = poller.snapshot(lambda name: [])
    assert len(made) == 1200 and len(snapshot) == 600
    assert {d.behind_s for d in snapshot} == {3.0}
