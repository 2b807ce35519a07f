"""Replication delay, the health measure: pure, no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._primary.health import DatabaseHealth, overall_health


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
