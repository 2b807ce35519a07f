"""The lease's fence without Litestream: the watchdog thread, the deadline counted from
before each call, the lease's own threads, and lock.json files that are not leases.
(The same against the real binary: tests/integration/test_lease_fence.py.)"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import pytest

from asgi_litestream._litestream.control import ControlClient
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._litestream.process import LitestreamProcess
from asgi_litestream._locks.lease import (
    Lease,
    LeaseHeld,
    LeaseStoreError,
    LeaseUnreadable,
    decode,
)
from asgi_litestream._locks.lease_keeper import LeaseKeeper
from asgi_litestream._locks.lease_stores import FileLeaseStore, S3LeaseStore, lease_store
from asgi_litestream._locks.watchdog import Watchdog


class FakeChild:
    """A Killable that records when it was killed."""

    pid = 4242

    def __init__(self) -> None:
        self.killed: list[float] = []

    def kill_now(self) -> bool:
        self.killed.append(time.monotonic())
        return len(self.killed) == 1  # gone after the first


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "lease watchdog" in t.name]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _no_watchdog_left_running() -> Iterator[None]:
    yield
    wait_for(lambda: not watchdog_threads())  # ended by the fire, disarm() or expire()


# -- The watchdog -----------------------------------------------------------------------

def test_the_watchdog_kills_at_the_deadline() -> None:
    """Armed and not renewed, the child is killed at the deadline (not before), once;
    then Litestream may not run and the thread is gone."""
    dog, child = Watchdog("t"), FakeChild()
    dog.watch(child)
    deadline = time.monotonic() + 0.2
    dog.arm(deadline)
    assert dog.may_run()
    wait_for(lambda: child.killed)
    assert deadline <= child.killed[0] < deadline + 0.1
    assert not dog.may_run()
    wait_for(lambda: not watchdog_threads())
    assert len(child.killed) == 1


def test_only_the_current_child_is_killed() -> None:
    """A child replaced (restarted) before the deadline is left alone: only the one
    watched at the deadline is killed."""
    dog, old, new = Watchdog("t"), FakeChild(), FakeChild()
    dog.watch(old)
    dog.arm(time.monotonic() + 0.1)
    dog.watch(new)
    wait_for(lambda: new.killed)
    assert old.killed == []


def test_a_renewal_moves_the_deadline() -> None:
    """Re-armed before the deadline, nothing is killed then; only at the new one."""
    dog, child = Watchdog("t"), FakeChild()
    dog.watch(child)
    dog.arm(time.monotonic() + 0.15)
    time.sleep(0.1)
    later = time.monotonic() + 0.3
    dog.arm(later)
    time.sleep(0.15)
    assert child.killed == [] and dog.may_run()
    wait_for(lambda: child.killed)
    assert child.killed[0] >= later


def test_disarmed_it_kills_nothing_and_its_thread_ends() -> None:
    """Released: no kill at the old deadline, no thread left, and no Litestream may run."""
    dog, child = Watchdog("t"), FakeChild()
    dog.watch(child)
    dog.arm(time.monotonic() + 0.1)
    dog.disarm()
    wait_for(lambda: not watchdog_threads())
    time.sleep(0.15)
    assert child.killed == [] and not dog.may_run()


def test_past_the_deadline_a_new_child_dies_at_once() -> None:
    """A child spawned after the deadline passed (a restart racing the fence) is killed
    as it is registered; expire() kills the one running now."""
    dog, first, second = Watchdog("t"), FakeChild(), FakeChild()
    dog.arm(time.monotonic() + 60)
    dog.watch(first)
    dog.expire()
    assert len(first.killed) == 1 and not dog.may_run()
    dog.watch(second)
    assert len(second.killed) == 1


def test_a_never_armed_watchdog_lets_nothing_run_and_kills_nothing() -> None:
    """Before the lease is won: may_run() is False, and watching a child kills nothing."""
    dog, child = Watchdog("t"), FakeChild()
    dog.watch(child)
    assert not dog.may_run() and child.killed == [] and not watchdog_threads()


STUBBORN = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(60)
"""


@pytest.mark.anyio
async def test_kill_now_reaches_only_its_own_process(tmp_path: Path) -> None:
    """kill_now() SIGKILLs the child from another thread; once it is reaped and closed,
    it signals nothing (its pid may belong to another process by then)."""
    script = tmp_path / "child.py"
    script.write_text(STUBBORN)
    async with anyio.create_task_group() as tg:
        process = await anyio.open_process([sys.executable, str(script)],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT)
        child = LitestreamProcess(process, name="t", control=ControlClient(tmp_path / "s"),
                                  log=LitestreamLog([]))
        tg.start_soon(child._pump_logs)
        assert await anyio.to_thread.run_sync(child.kill_now)
        with anyio.fail_after(5):
            assert await child.wait() == -signal.SIGKILL
        await child.aclose(grace=0)
    assert not child.kill_now()


# -- The deadline, from before the call -------------------------------------------------

class SlowThenDown:
    """A lease store whose renewals take ``delay`` seconds and succeed ``slow`` times,
    then fail at once."""

    def __init__(self, inner: FileLeaseStore, delay: float, slow: int = 1) -> None:
        self.inner, self.owner = inner, inner.owner
        self.delay, self.slow = delay, slow
        self.renewals: list[tuple[float, Lease]] = []  # (monotonic before, result)

    def read(self) -> Lease | None:
        return self.inner.read()

    def acquire(self, ttl: float) -> Lease:
        return self.inner.acquire(ttl)

    def renew(self, lease: Lease, ttl: float) -> Lease:
        if len(self.renewals) >= self.slow:
            raise LeaseStoreError("cut off")
        started = time.monotonic()
        # The expiry is stamped before the request, as a real store does; the request
        # is what takes the time.
        renewed = self.inner.renew(lease, ttl)
        time.sleep(self.delay)
        self.renewals.append((started, renewed))
        return renewed

    def release(self, lease: Lease) -> None:
        self.inner.release(lease)

    def take_over(self, seen: Lease, ttl: float) -> Lease:
        return self.inner.take_over(seen, ttl)


def monotonic_of(when: datetime) -> float:
    return time.monotonic() + (when - datetime.now(timezone.utc)).total_seconds()


@pytest.mark.anyio
async def test_a_slow_renewal_does_not_push_the_fence_past_the_expiry(tmp_path: Path) -> None:
    """A renewal that succeeds after 0.6 s (ttl 3), then failures: the fence comes the
    margin before the expiry that renewal wrote, not 0.6 s later."""
    ttl = 3.0
    store = SlowThenDown(FileLeaseStore(tmp_path, owner="a:1"), delay=0.6)
    keeper = LeaseKeeper(store, ttl=ttl, name="t", where="lock.json")  # type: ignore[arg-type]
    assert await keeper.acquire(give_up=lambda: False)
    with anyio.fail_after(10):
        why = await keeper.keep()
    fenced_at = time.monotonic()
    assert why is not None and "could not renew" in why
    ((_, renewed),) = store.renewals
    expires = monotonic_of(renewed.expires_at)
    assert fenced_at <= expires - keeper.fence_margin + 0.15, (
        f"fenced {fenced_at - expires:+.2f}s after the expiry")
    assert not keeper.watchdog.may_run()


@pytest.mark.anyio
async def test_lease_calls_do_not_queue_behind_the_default_thread_limiter(
        tmp_path: Path) -> None:
    """Every token of anyio's default limiter taken (busy sync endpoints): the holder
    still renews, and is not fenced."""
    keeper = LeaseKeeper(FileLeaseStore(tmp_path, owner="a:1"), ttl=3.0, name="t",
                         where="lock.json")
    assert await keeper.acquire(give_up=lambda: False)
    first = keeper.lease
    limiter = anyio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        try:
            for _ in range(int(limiter.total_tokens) + 5):
                tg.start_soon(lambda: anyio.to_thread.run_sync(release.wait))
            with anyio.fail_after(5):
                while limiter.borrowed_tokens < limiter.total_tokens:
                    await anyio.sleep(0.01)
            with anyio.move_on_after(4.0):  # past the 2 s deadline of a lease of 3 s
                fenced = await keeper.keep()
                raise AssertionError(f"fenced: {fenced}")
        finally:
            release.set()  # the threads cannot be cancelled
    assert keeper.lease is not None and first is not None
    assert keeper.lease.expires_at > first.expires_at and keeper.fenced_because is None
    await keeper.release()


def test_each_s3_call_is_one_attempt_within_a_quarter_of_the_margin() -> None:
    """The S3 client connects and reads within a quarter of the fencing margin each, and
    never retries: a renewal answers, or fails, well before its deadline."""
    for ttl, each in ((6.0, 0.25), (30.0, 1.25), (600.0, 5.0)):
        settings: Any = SimpleNamespace(
            lease_replica="s3://bucket/app?endpoint=http://127.0.0.1:9&region=us-east-1",
            lease_ttl=ttl, name="t")
        store = LeaseKeeper.of(settings, {}).store
        assert isinstance(store, S3LeaseStore)
        config = store._client().meta.config
        assert (config.connect_timeout, config.read_timeout) == (each, each)
        assert config.retries["total_max_attempts"] == 1


# -- A lock.json that is not a lease ------------------------------------------------------

@pytest.mark.parametrize(("text", "held"), [
    ("9999-12-31T23:59:59-05:00", True),  # past year 9999 in UTC: held for good
    ("0001-01-01T00:00:00+05:00", False),  # before year 1 in UTC: long expired
])
def test_an_expiry_past_pythons_years_reads_as_upstream_reads_it(text: str, held: bool
                                                                 ) -> None:
    """An offset carrying the time past year 9999 or before year 1 (Go reads both) is no
    OverflowError: held for good, or expired, as upstream judges it."""
    lease = decode(f'{{"generation":3,"expires_at":"{text}","owner":"x:1"}}'.encode(), "e")
    assert (lease.generation, lease.owner, lease.expired()) == (3, "x:1", not held)


def test_an_out_of_range_expiry_in_the_store_is_held_or_taken_over(tmp_path: Path) -> None:
    """In lock.json: the far one is held (naming its owner), the early one is taken over
    with its generation + 1."""
    store = lease_store(f"file://{tmp_path}", {}, owner="a:1")
    lock = tmp_path / "lock.json"
    lock.write_text('{"generation":3,"expires_at":"9999-12-31T23:59:59-05:00","owner":"x:1"}')
    with pytest.raises(LeaseHeld, match="x:1") as refused:
        store.acquire(30)
    assert not isinstance(refused.value, LeaseUnreadable)
    lock.write_text('{"generation":3,"expires_at":"0001-01-01T00:00:00+05:00","owner":"x:1"}')
    assert store.acquire(30).generation == 4


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"generation":"x"}', b"\xff"])
def test_a_lock_that_is_no_lease_is_held_by_an_unknown_owner(tmp_path: Path, data: bytes
                                                             ) -> None:
    """Garbage in lock.json: acquire is refused as held by an unknown owner (and it is a
    store error to a reader), never overwritten."""
    store = lease_store(f"file://{tmp_path}", {}, owner="a:1")
    (tmp_path / "lock.json").write_bytes(data)
    with pytest.raises(LeaseHeld, match="not a lease") as refused:
        store.acquire(30)
    assert isinstance(refused.value, LeaseStoreError) and refused.value.holder == ""
    with pytest.raises(LeaseStoreError):
        store.read()
    assert (tmp_path / "lock.json").read_bytes() == data


@pytest.mark.anyio
@pytest.mark.parametrize("data", [
    b"garbage",
    b'{"generation":1,"expires_at":"9999-12-31T23:59:59-23:59","owner":"x:1"}',
])
async def test_a_lock_that_is_no_lease_never_kills_the_lease_task(
        tmp_path: Path, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """The keeper waits (garbage logged once, with the fix; an expiry past year 9999 as
    any holder's), and takes the lease as soon as the file is deleted."""
    keeper = LeaseKeeper(FileLeaseStore(tmp_path, owner="a:1"), ttl=3.0, name="t",
                         where="lock.json")
    (tmp_path / "lock.json").write_bytes(data)
    won = False

    async def acquire() -> None:
        nonlocal won
        won = await keeper.acquire(give_up=lambda: False)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acquire)
            await anyio.sleep(1.6)  # four polls
            assert not won and keeper.status().role == "waiting"
            (tmp_path / "lock.json").unlink()
    assert won and keeper.lease is not None and keeper.lease.generation == 1
    unreadable = [r for r in caplog.records if "not a lease" in r.getMessage()]
    if data == b"garbage":
        assert len(unreadable) == 1 and "delete it" in unreadable[0].getMessage()
        assert unreadable[0].levelno == logging.ERROR
    else:
        assert unreadable == [] and "held by x:1 until 9999-12-31" in caplog.text
    await keeper.release()
