"""The lease contract, run against every store (a file:// directory, S3 on moto): each
function takes stores of different owners on one replica and fails on any breach."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from asgi_litestream._locks.lease import Lease, LeaseHeld, LeaseLost, LeaseStore

# Raw bytes of upstream's lock object into the replica (as Go's json.Marshal wrote them).
WriteRaw = Callable[[bytes], None]


def wait_until_expired(lease: Lease) -> None:
    while not lease.expired():
        time.sleep(max(lease.remaining(), 0.001))


def upstream_json(generation: int, expires_at: datetime, owner: str) -> bytes:
    """What upstream writes: Go's RFC3339Nano, nine digits here, in a local offset."""
    local = expires_at.astimezone(timezone(timedelta(hours=-7)))
    stamp = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond:06d}789-07:00"
    return (f'{{"generation":{generation},"expires_at":"{stamp}",'
            f'"owner":"{owner}"}}').encode()


def one_holder_at_a_time(a: LeaseStore, b: LeaseStore) -> None:
    before = datetime.now(timezone.utc)
    lease = a.acquire(60)
    after = datetime.now(timezone.utc)
    assert (lease.generation, lease.owner) == (1, a.owner)
    assert before + timedelta(seconds=60) <= lease.expires_at <= after + timedelta(seconds=60)
    seen = b.read()
    assert seen is not None
    assert (seen.generation, seen.owner, seen.expires_at) == (1, a.owner, lease.expires_at)
    with pytest.raises(LeaseHeld, match=a.owner) as refused:
        b.acquire(60)
    assert (refused.value.holder, refused.value.expires_at) == (a.owner, lease.expires_at)
    with pytest.raises(LeaseHeld):
        a.acquire(60)  # a holder does not acquire twice either: it renews


def renewal_moves_only_the_expiry(a: LeaseStore) -> None:
    first = a.acquire(30)
    renewed = a.renew(first, 60)
    assert renewed.generation == first.generation and renewed.owner == a.owner
    assert renewed.expires_at > first.expires_at and renewed.etag != first.etag
    assert a.read() == renewed
    with pytest.raises(LeaseLost):
        a.renew(first, 60)  # a stale copy no longer names the lease
    assert a.renew(renewed, 60).generation == first.generation


def takeover_only_after_expiry(a: LeaseStore, b: LeaseStore) -> None:
    held = a.acquire(60)
    with pytest.raises(LeaseHeld):
        b.acquire(60)
    short = a.renew(held, 0.05)
    wait_until_expired(short)
    taken = b.acquire(60)
    assert (taken.generation, taken.owner) == (2, b.owner)
    with pytest.raises(LeaseLost):
        a.renew(short, 60)
    with pytest.raises(LeaseLost):
        a.release(short)
    assert b.read() == taken


def release_frees_at_once(a: LeaseStore, b: LeaseStore) -> None:
    lease = a.acquire(60)
    a.release(lease)
    assert b.read() is None
    a.release(lease)  # already gone: nothing to do
    taken = b.acquire(60)
    assert (taken.generation, taken.owner) == (1, b.owner)
    with pytest.raises(LeaseLost):
        a.release(lease)  # the name is b's now
    assert a.read() == taken


def upstream_lock_is_honoured(write_raw: WriteRaw, a: LeaseStore) -> None:
    until = datetime.now(timezone.utc) + timedelta(minutes=5)
    write_raw(upstream_json(3, until, "other:1"))
    with pytest.raises(LeaseHeld, match="other:1") as refused:
        a.acquire(60)
    assert refused.value.expires_at == until
    write_raw(upstream_json(3, until - timedelta(minutes=10), "other:1"))
    taken = a.acquire(60)
    assert (taken.generation, taken.owner) == (4, a.owner)


def exactly_one_wins_a_race(stores: list[LeaseStore], *, expired: bool) -> None:
    """All ``stores`` acquire at once (over a lease that is absent, or ``expired``)."""
    if expired:
        wait_until_expired(stores[0].acquire(0.01))
    start = threading.Barrier(len(stores))
    won: list[Lease] = []
    refused: list[LeaseHeld] = []

    def attempt(store: LeaseStore) -> None:
        start.wait()
        try:
            won.append(store.acquire(60))
        except LeaseHeld as exc:
            refused.append(exc)

    threads = [threading.Thread(target=attempt, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == len(stores) - 1, (won, refused)
    assert {exc.holder for exc in refused} == {won[0].owner}
    assert stores[0].read() == won[0]


def take_over_from_a_known_gone_holder(a: LeaseStore, b: LeaseStore) -> None:
    """An unexpired lease is taken over (generation + 1) only while it is still the
    one seen; renewed meanwhile, the take-over is refused and names the holder."""
    held = a.acquire(30)
    seen = b.read()
    assert seen is not None and seen.owner == a.owner
    a.renew(held, 30)  # alive after all: the lease moved on since it was seen
    with pytest.raises(LeaseHeld):
        b.take_over(seen, 30)
    fresh = b.read()
    assert fresh is not None
    taken = b.take_over(fresh, 30)
    assert taken.owner == b.owner and taken.generation == fresh.generation + 1
    with pytest.raises(LeaseLost):
        a.renew(held, 30)
