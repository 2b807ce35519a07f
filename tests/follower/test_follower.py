"""Followers without the real binary: Litestream's output read right, the lag
arithmetic, the decision to restore afresh, and the follow loop driven by small fake
`litestream` scripts (the real one is proven in tests/integration/test_follower.py)."""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from pathlib import Path

import anyio
import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._follower.copy import connect_readonly
from asgi_litestream._follower.follower import Follower
from asgi_litestream._follower.group import FollowerSet
from asgi_litestream._follower.lag import Lag
from asgi_litestream._follower.process import resume_refused
from asgi_litestream._litestream.commands import restore_command
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._litestream.positions import head_from_ltx_json, head_from_names
from asgi_litestream._litestream.restart import RestartPolicy

# Output of `litestream ltx -level all -json <url>` (0.5.17), a log line before it.
LTX_LISTING = """\
time=2026-11-30T13:37:14.000Z level=INFO msg="some log line" n=3
[
  {"level": 0, "min_txid": "0000000000000001", "max_txid": "0000000000000001"},
  {"level": 0, "min_txid": "0000000000000002", "max_txid": "000000000000001f"},
  {"level": 0, "min_txid": "0000000000000020", "max_txid": "0000000000000020"}
]
"""

# Litestream 0.5.17's words when it will not resume over an existing copy.
REFUSALS = [
    "Error: cannot resume follow mode: saved TXID 0000000000000024 is ahead of latest "
    "snapshot (max TXID 0000000000000001); delete /d/c.db and /d/c.db-txid to re-restore",
    "Error: cannot resume follow mode: saved TXID 0000000000000002 is behind the earliest "
    "snapshot (min TXID 0000000000000009); replica history has been pruned -- delete "
    "/d/c.db and /d/c.db-txid to re-restore",
    "Error: cannot resume follow mode: database exists but no -txid file found; delete the "
    "database to re-restore: /d/c.db",
    'Error: read txid file for crash recovery: parse txid file: invalid formatted '
    'transaction id length: "garbage"',
]


def test_the_head_is_the_highest_max_txid_among_ltx_file_names() -> None:
    """File names are <min hex16>-<max hex16>.ltx; temporary and foreign files are ignored."""
    names = ["0000000000000001-0000000000000001.ltx", "0000000000000002-00000000000000ff.ltx",
             "0000000000000100-0000000000000100.ltx.tmp", "notes.txt"]
    assert head_from_names(names) == 0xFF


def test_an_empty_level_has_no_head() -> None:
    """No LTX file at all: the replica holds nothing yet (None, not 0)."""
    assert head_from_names([]) is None
    assert head_from_names(["0000000000000001-0000000000000001.ltx.tmp"]) is None


def test_the_head_is_read_from_the_ltx_command_among_log_lines() -> None:
    """`litestream ltx -json` prints a list; its rows give the head, log lines don't
    (the follower reads it as every position is read: _litestream/positions.py)."""
    assert head_from_ltx_json(LTX_LISTING).txid == 0x20


def test_an_empty_ltx_listing_has_no_head() -> None:
    """An empty list (or null): the replica holds nothing yet."""
    assert head_from_ltx_json("[]").name is None
    assert head_from_ltx_json("null").name is None


@pytest.mark.parametrize("line", REFUSALS)
def test_a_refused_resume_means_restore_afresh(line: str) -> None:
    """Each way Litestream refuses to resume over the copy calls for a fresh restore."""
    assert resume_refused(line)


@pytest.mark.parametrize("line", [
    "Error: cannot validate saved TXID for crash recovery: operation error S3: ListObjectsV2",
    "Error: no matching backup files available",
    'time=2026-11-30T13:37:14.000Z level=ERROR msg="follow: error applying updates" err=x',
])
def test_other_failures_keep_the_copy(line: str) -> None:
    """A replica that could not be listed is a transient failure, not a bad copy."""
    assert not resume_refused(line)


def test_a_copy_that_holds_the_head_is_not_behind() -> None:
    """Caught up: zero transactions, zero seconds."""
    lag = Lag()
    lag.observe(10, 10, now=100.0)
    assert lag.measure(10, now=150.0) == (0, 0.0)


def test_seconds_behind_count_from_when_the_missing_transaction_was_first_seen() -> None:
    """The copy misses 6..10, first seen at t=100: 3 s behind at t=103, 5 transactions."""
    lag = Lag()
    lag.observe(10, 5, now=100.0)
    assert lag.measure(5, now=103.0) == (5, 3.0)


def test_a_copy_catching_up_is_as_old_as_its_oldest_missing_transaction() -> None:
    """Heads 10 (t=100) and 20 (t=110); a copy at 12 misses 13.., first seen at t=110."""
    lag = Lag()
    lag.observe(10, 5, now=100.0)
    lag.observe(20, 8, now=110.0)
    assert lag.measure(12, now=115.0) == (8, 5.0)
    assert lag.measure(9, now=115.0) == (11, 15.0)


def test_a_copy_updated_after_the_probe_is_not_behind() -> None:
    """The copy moved past the last head the probe saw: caught up, never negative."""
    lag = Lag()
    lag.observe(10, 5, now=100.0)
    assert lag.measure(12, now=101.0) == (0, 0.0)


def test_the_lag_is_unknown_before_a_probe_and_after_a_failed_one() -> None:
    """No probe yet, or the last one failed: None, not 0."""
    lag = Lag()
    assert lag.measure(5, now=1.0) == (None, None)
    lag.observe(10, 5, now=1.0)
    lag.failed()
    assert lag.measure(5, now=2.0) == (None, None)
    lag.observe(10, 5, now=3.0)
    assert lag.measure(5, now=4.0) == (5, 3.0)


def test_a_replica_that_started_over_resets_the_lag() -> None:
    """A head lower than before (the replica was reset): older first-seen times go."""
    lag = Lag()
    lag.observe(50, 5, now=100.0)
    lag.observe(3, 2, now=200.0)
    assert lag.measure(2, now=201.0) == (1, 1.0)


def test_the_lag_history_is_bounded_and_never_understates() -> None:
    """Thousands of probes while the copy is stuck: memory stays bounded and the lag
    still counts from the first probe that saw a missing transaction."""
    lag = Lag()
    for step in range(5000):
        lag.observe(10 + step, 5, now=100.0 + step)
    assert len(lag._first_seen) <= 1024
    assert lag.measure(5, now=6000.0) == (5004, 5900.0)


def test_the_follow_command_restores_with_follow_into_the_output(tmp_path: Path) -> None:
    """restore -f, waiting out an empty replica (-if-replica-exists), the interval as a
    Go duration, the output, then the replica; wrapped for a parent-death signal."""
    command = restore_command(Path("/bin/litestream"), output=tmp_path / "c.db",
                              replica_url="file:///r", if_replica_exists=True, follow=0.25)
    tail = ["/bin/litestream", "restore", "-f", "-follow-interval", "250ms",
            "-if-replica-exists", "-o", str(tmp_path / "c.db"), "file:///r"]
    assert command[-len(tail):] == tail
    if sys.platform.startswith("linux"):
        assert len(command) > len(tail)  # setpriv --pdeathsig, or the Python shim


def test_the_follow_command_can_name_the_replica_through_a_config_file() -> None:
    """With a config file the database path names the replica: no URL in argv."""
    command = restore_command(Path("/bin/litestream"), output=Path("/d/c.db"),
                              config_path=Path("/d/l.yml"), database=Path("/d/c.db"),
                              if_replica_exists=True, follow=1)
    assert command[command.index("-config") + 1] == "/d/l.yml"
    assert command[-3:] == ["-o", "/d/c.db", "/d/c.db"]
    assert command[command.index("-follow-interval") + 1] == "1000ms"
    assert not [arg for arg in command if "://" in arg]


def test_a_readonly_connection_refuses_writes_and_keeps_no_page_cache(tmp_path: Path) -> None:
    """Writing through it fails loudly; its page cache is off (stale pages otherwise)."""
    path = tmp_path / "copy.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x)")
    setup.close()
    conn = connect_readonly(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("PRAGMA cache_size").fetchone() == (0,)
    finally:
        conn.close()


def test_a_missing_copy_cannot_be_opened_readonly(tmp_path: Path) -> None:
    """No copy yet: an error, never an empty database created in its place."""
    with pytest.raises(sqlite3.OperationalError):
        connect_readonly(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_a_follower_that_never_ran_is_not_ready_and_hides_credentials(tmp_path: Path) -> None:
    """Before the first restore: not ready, not healthy, lag unknown, password redacted."""
    follower = Follower(Path("/bin/litestream"), Database(
        path=tmp_path / "c.db", replica_url="sftp://user:hunter2@host/backups"),
        env={}, log=LitestreamLog([]), config_path=tmp_path / "litestream.yml")
    status = follower.status().to_json()
    assert status["ready"] is False and status["healthy"] is False
    assert status["behind_s"] is None and status["copy_txid"] is None
    assert "hunter2" not in repr(status) and "hunter2" not in repr(follower)


def test_a_replica_url_with_a_password_needs_a_config_file(tmp_path: Path) -> None:
    """The URL would be in `restore -f`'s argv, seen by every user: refused, named."""
    with pytest.raises(ValueError, match="config_path"):
        Follower(Path("/bin/litestream"), Database(
            path=tmp_path / "c.db", replica_url="sftp://user:hunter2@host/backups"),
            env={}, log=LitestreamLog([]))


def test_bad_intervals_are_refused(tmp_path: Path) -> None:
    """A zero interval would make Litestream fall back silently: refused, named."""
    with pytest.raises(ValueError, match="interval=0"):
        Follower(Path("/bin/litestream"), Database(path=tmp_path / "c.db",
                 replica_url="file:///r"), env={}, log=LitestreamLog([]), interval=0)


# -- the loop, with fake `litestream` scripts ---------------------------------------------

FAKE_PREFIX = f"#!{sys.executable}\n" + """\
import os, sys, time
args = sys.argv[1:]
out = args[args.index("-o") + 1]
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(out + "\\n")
def log(msg, **fields):
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    print(f'time=2026-01-01T00:00:00Z level=INFO msg="{msg}"{extra}', flush=True)
"""

# Refuses to resume over an existing copy; restores a fresh one (with a WAL header, as
# Litestream's first restore leaves it) and follows it until stopped.
RESTORER = FAKE_PREFIX + """\
if os.path.exists(out):
    print("Error: cannot resume follow mode: saved TXID 0000000000000009 is ahead of "
          "latest snapshot (max TXID 0000000000000001); delete it", flush=True)
    sys.exit(1)
with open(os.environ["FAKE_SOURCE"], "rb") as src, open(out, "wb") as dst:
    dst.write(src.read())
with open(out + "-txid", "w") as txid:
    txid.write("000000000000000a\\n")
log("entering follow mode", output=out, txid="000000000000000a")
time.sleep(60)
"""

CRASHER = FAKE_PREFIX + """\
print("Error: something broke", flush=True)
sys.exit(3)
"""

EMPTY = FAKE_PREFIX + """\
log("no matching backups found")
"""


def fake_binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "litestream"
    path.write_text(script)
    path.chmod(0o755)
    return path


def fake_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "FAKE_CALLS": str(tmp_path / "calls"),
            "FAKE_SOURCE": str(tmp_path / "source.db")}


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def make_wal_database(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.anyio
async def test_a_refused_resume_restores_beside_the_copy_and_renames_it_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Over an old copy Litestream refuses to resume: the old copy stays in place while
    a fresh one is restored under a temporary name, switched to rollback mode, renamed
    over it; the stale -txid/-wal/-shm go, and the new position lands beside the copy."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    copy = tmp_path / "copy.db"
    make_wal_database(tmp_path / "source.db", rows=3)
    with sqlite3.connect(copy) as old:
        old.execute("CREATE TABLE old (x)")
    old.close()
    for suffix, text in (("-txid", "0000000000000009\n"), ("-wal", ""), ("-shm", "")):
        Path(f"{copy}{suffix}").write_text(text)
    followers = FollowerSet(fake_binary(tmp_path, RESTORER),
                            [Database(path=copy, replica_url="s3://bucket/db")],
                            env=fake_env(tmp_path), log=LitestreamLog([]))
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            assert await followers.wait_ready(10)
            assert await followers.wait_for(copy, 10, timeout=1)
            follower = followers.follower(copy)
            assert calls(tmp_path) == [str(copy), str(tmp_path / ".copy.db.follower")]
            assert follower.generation == 1 and follower.copy_txid == 10
            assert follower.restarts == 0  # a refused resume is no crash
            assert copy.read_bytes()[18:20] == b"\x01\x01"  # rollback mode
            assert not Path(f"{copy}-txid").exists()  # the old position is gone...
            assert not Path(f"{copy}-wal").exists() and not Path(f"{copy}-shm").exists()
            reader = connect_readonly(copy)
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            reader.close()
        finally:
            await followers.close()
    # ...and the new one is beside the copy once Litestream stopped, for a resume.
    assert Path(f"{copy}-txid").read_text() == "000000000000000a\n"
    assert not (tmp_path / ".copy.db.follower").exists()
    assert "cannot resume following" in caplog.text


@pytest.mark.anyio
async def test_a_crashing_follower_is_restarted_then_given_up(tmp_path: Path) -> None:
    """Each exit restarts it (backoff from the policy), counted, with its exit code;
    past the budget it stays down and the status says why."""
    followers = FollowerSet(
        fake_binary(tmp_path, CRASHER), [Database(path=tmp_path / "c.db",
                                                  replica_url="file:///nowhere")],
        env=fake_env(tmp_path), log=LitestreamLog([]),
        policy=lambda: RestartPolicy(max_restarts=2, restart_window=60, max_backoff=0.1))
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            deadline = time.monotonic() + 20
            while not (followers.snapshot()[0]["error"] or "").startswith("following stopped"):
                assert time.monotonic() < deadline, followers.snapshot()
                await anyio.sleep(0.02)
            status = followers.snapshot()[0]
        finally:
            await followers.close()
    assert status["restarts"] == 2 and status["last_exit_code"] == 3
    assert "something broke" in status["error"]
    assert status["pid"] is None and status["ready"] is False
    assert len(calls(tmp_path)) == 3


@pytest.mark.anyio
async def test_an_empty_replica_is_retried_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """No backup yet: it looks again every second, one log line, no restart counted."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    followers = FollowerSet(fake_binary(tmp_path, EMPTY),
                            [Database(path=tmp_path / "c.db", replica_url="file:///r")],
                            env=fake_env(tmp_path), log=LitestreamLog([]))
    async with anyio.create_task_group() as task_group:
        await task_group.start(followers.serve)
        try:
            deadline = time.monotonic() + 20
            while len(calls(tmp_path)) < 3:
                assert time.monotonic() < deadline
                await anyio.sleep(0.02)
            status = followers.snapshot()[0]
        finally:
            await followers.close()
    assert status["restarts"] == 0 and status["ready"] is False and status["error"] is None
    assert caplog.text.count("holds no backup yet") == 1
    assert "no matching backups found" not in caplog.text
    # Ours only: Python 3.10's asyncio child watcher may warn "Unknown child process
    # pid" when a process exits as fast as this fake one (a CPython race, not ours).
    assert not [r for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("asgi_litestream")]
