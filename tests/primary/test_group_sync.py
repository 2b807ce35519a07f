"""GroupSync: concurrent callers share syncs, and none is released by a sync that
started before it called."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from asgi_litestream import SyncError
from asgi_litestream._primary.group_sync import DurableSyncs, GroupSync

pytestmark = pytest.mark.anyio


class FakeSync:
    """A sync that takes ``duration`` and returns its own round number."""

    def __init__(self, duration: float = 0.05, fail: bool = False) -> None:
        self.duration = duration
        self.fail = fail
        self.started = 0

    async def __call__(self) -> int:
        self.started += 1
        number = self.started
        await anyio.sleep(self.duration)
        if self.fail:
            raise SyncError("replica unreachable")
        return number


async def test_callers_during_a_sync_join_the_next_one() -> None:
    """A caller arriving while round 1 runs is answered by round 2, not round 1."""
    fake = FakeSync()
    results: dict[str, int] = {}
    async with anyio.create_task_group() as tg:
        group = GroupSync(fake, tg)

        async def call(label: str) -> None:
            results[label] = await group.wait(5)

        tg.start_soon(call, "first")
        await anyio.sleep(0.01)  # round 1 is now in flight
        assert fake.started == 1
        for i in range(10):
            tg.start_soon(call, f"late-{i}")
    assert results["first"] == 1
    assert {results[f"late-{i}"] for i in range(10)} == {2}
    assert group.rounds == 2


async def test_many_concurrent_callers_cost_few_syncs() -> None:
    """100 callers arriving over time need a handful of syncs, not 100."""
    fake = FakeSync(duration=0.02)
    async with anyio.create_task_group() as tg:
        group = GroupSync(fake, tg)
        for _ in range(100):
            tg.start_soon(group.wait, 5)
            await anyio.sleep(0.001)
    assert group.rounds < 20


async def test_a_failed_sync_fails_its_callers_and_the_next_round_retries() -> None:
    """An error reaches every caller of that round; a later call starts afresh."""
    fake = FakeSync(fail=True)
    async with anyio.create_task_group() as tg:
        group = GroupSync(fake, tg)
        with pytest.raises(SyncError, match="unreachable"):
            await group.wait(5)
        fake.fail = False
        assert await group.wait(5) == 2


async def test_a_caller_gives_up_at_its_timeout_without_hurting_the_round() -> None:
    """A short timeout raises SyncError; others in the same round still get it."""
    fake = FakeSync(duration=0.3)
    results: list[int] = []
    async with anyio.create_task_group() as tg:
        group = GroupSync(fake, tg)

        async def patient() -> None:
            results.append(await group.wait(5))

        tg.start_soon(patient)
        await anyio.lowlevel.checkpoint()
        with pytest.raises(SyncError, match=r"within 0\.05s"):
            await group.wait(0.05)
    assert len(results) == 1  # the patient caller was not hurt by the impatient one


async def test_a_cancelled_round_fails_its_callers() -> None:
    """If the round's task is cancelled (shutdown), waiting callers get SyncError,
    never a silent success."""
    fake = FakeSync(duration=5)
    outcome: list[object] = []

    async def host(*, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]) -> None:
        async with anyio.create_task_group() as runner_group:
            task_status.started(runner_group)
            await anyio.sleep_forever()

    async with anyio.create_task_group() as outer:
        runner_group = await outer.start(host)
        group = GroupSync(fake, runner_group)

        async def caller() -> None:
            try:
                outcome.append(await group.wait(10))
            except SyncError as exc:
                outcome.append(exc)

        outer.start_soon(caller)
        await anyio.sleep(0.05)
        runner_group.cancel_scope.cancel()
    assert len(outcome) == 1 and isinstance(outcome[0], SyncError), outcome


def _syncs(fake: FakeSync, task_group: anyio.abc.TaskGroup, *paths: str) -> DurableSyncs:
    async def sync_once(path: Path) -> int:
        return await fake()

    return DurableSyncs([Path(p) for p in paths], sync_once, task_group)


async def test_one_database_wait_is_answered_by_a_round_that_began_after_it() -> None:
    """Through DurableSyncs on one database (awaited directly, no task per wait): a
    caller arriving while round 1 runs is answered by round 2, never by round 1."""
    fake = FakeSync()
    results: dict[str, dict[str, int]] = {}
    async with anyio.create_task_group() as tg:
        syncs = _syncs(fake, tg, "/data/app.db")

        async def call(label: str) -> None:
            results[label] = await syncs.wait(5)

        tg.start_soon(call, "first")
        await anyio.sleep(0.01)  # round 1 is now in flight
        assert fake.started == 1
        for i in range(10):
            tg.start_soon(call, f"late-{i}")
    assert results["first"] == {"/data/app.db": 1}
    assert {results[f"late-{i}"]["/data/app.db"] for i in range(10)} == {2}
    assert syncs.rounds == 2
    assert syncs.stats.callers == 11 and syncs.stats.failures == 0


async def test_one_database_failure_is_raised_plain_and_counted() -> None:
    """A failed round reaches the caller as SyncError itself (not an exception group),
    and the stats count it as a failed wait."""
    fake = FakeSync(duration=0.01, fail=True)
    async with anyio.create_task_group() as tg:
        syncs = _syncs(fake, tg, "/data/app.db")
        with pytest.raises(SyncError, match="unreachable"):
            await syncs.wait(5, database="/data/app.db")
    assert syncs.stats.callers == 1 and syncs.stats.failures == 1


async def test_naming_a_database_that_is_not_replicated_is_refused() -> None:
    """``database=`` must name a replicated database: anything else is a SyncError
    that names it and those known, and sends no sync."""
    fake = FakeSync(duration=0.01)
    async with anyio.create_task_group() as tg:
        syncs = _syncs(fake, tg, "/data/app.db", "/data/other.db")
        with pytest.raises(SyncError, match=r"/data/nope\.db is not one of .*/data/app\.db"):
            await syncs.wait(5, database="/data/nope.db")
        both = await syncs.wait(5)
    assert fake.started == 2  # one round per database waited on, none for the refused name
    assert set(both) == {"/data/app.db", "/data/other.db"}
