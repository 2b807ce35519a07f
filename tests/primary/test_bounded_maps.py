"""Maps keyed by database names from outside (durable(database=...), Litestream's log
lines) stay bounded however many distinct names pass through: measured with
tracemalloc, the memory held after thousands more names does not grow with them."""

from __future__ import annotations

import gc
import json
import logging
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from asgi_litestream._exceptions import SyncError
from asgi_litestream._litestream.logs import MAX_DATABASES, LitestreamLog
from asgi_litestream._primary.group_sync import DurableSyncs

# Before the bound, each name held ~650 B (durable) or ~900 B (log): the thousands of
# names below were megabytes. A bounded map's noise (a table resized by the event
# loop, an interpreter cache) is tens of kilobytes.
_SLACK = 256 * 1024


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """A reading of the bytes allocated since entering and still held (compare two)."""
    tracemalloc.start()
    try:
        yield lambda: (gc.collect(), tracemalloc.get_traced_memory()[0])[1]
    finally:
        tracemalloc.stop()


def _folder_syncs(task_group: anyio.abc.TaskGroup,
                  gate: Callable[[], anyio.Event] | None = None,
                  ended: list[int] | None = None) -> DurableSyncs:
    """Every database is a folder's; a sync waits for ``gate()`` to be set, if given,
    and is counted in ``ended[0]``."""
    async def sync_once(path: Path) -> int:
        if gate is not None:
            await gate().wait()
        if ended is not None:
            ended[0] += 1
        return 1

    return DurableSyncs([], sync_once, task_group, in_folder=lambda _: True)


@pytest.mark.anyio
async def test_durable_waits_on_many_names_hold_no_memory_for_them() -> None:
    """5,000 distinct databases of a folder, each waited on once: nothing is held for
    them afterwards, and every sync they sent is still counted."""
    async with anyio.create_task_group() as task_group:
        syncs = _folder_syncs(task_group)
        with traced() as held:
            for index in range(500):  # warm up: first-use allocations are not per name
                await syncs.wait(5, database=f"/tenants/warm-{index}.db")
            before = held()
            for index in range(5000):
                await syncs.wait(5, database=f"/tenants/{index}.db")
            grown = held() - before
        assert grown < _SLACK, grown
        assert syncs.rounds == 5500


@pytest.mark.anyio
async def test_concurrent_waits_on_a_new_name_still_share_a_sync() -> None:
    """Group commit still works for a folder's database named for the first time:
    50 concurrent waits send at most two syncs."""
    async with anyio.create_task_group() as task_group:
        syncs = _folder_syncs(task_group)
        async with anyio.create_task_group() as waiters:
            for _ in range(50):
                waiters.start_soon(syncs.wait, 5, "/tenants/new.db")
        assert 1 <= syncs.rounds <= 2


@pytest.mark.anyio
async def test_waits_that_timed_out_mid_sync_hold_no_memory_once_it_ends() -> None:
    """2,000 names whose waits gave up while their sync was still running, twice over:
    once those syncs end and another wait comes, nothing is held for them (the second
    time adds nothing; the first sized the task group's own tables)."""
    async with anyio.create_task_group() as task_group:
        gate = anyio.Event()
        ended = [0]
        syncs = _folder_syncs(task_group, lambda: gate, ended)

        async def abandoned(prefix: str) -> None:
            nonlocal gate
            for index in range(2000):
                with pytest.raises(SyncError):
                    await syncs.wait(0, database=f"/tenants/{prefix}-{index}.db")
            gate.set()
            with anyio.fail_after(30):
                while ended[0] < syncs.rounds:  # the syncs end
                    await anyio.sleep(0.01)
            await syncs.wait(5, database=f"/tenants/{prefix}-next.db")
            gate = anyio.Event()

        with traced() as held:
            await abandoned("first")
            before = held()
            await abandoned("second")
            grown = held() - before
        assert grown < _SLACK, grown
        assert syncs.rounds == 4002


def test_log_lines_about_many_databases_hold_bounded_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Warnings about 20,000 distinct databases: memory stops growing once the last
    MAX_DATABASES are kept; the latest are reported, the oldest forgotten."""
    caplog.set_level(logging.CRITICAL, logger="asgi_litestream")  # no records kept by pytest
    log = LitestreamLog([])

    def warn(index: int) -> None:
        log.line(json.dumps({"level": "WARN", "msg": "sync error", "db": f"t{index}.db",
                             "error": "s3: timeout"}).encode(), 42)

    with traced() as held:
        for index in range(2 * MAX_DATABASES):
            warn(index)
        before = held()
        for index in range(2 * MAX_DATABASES, 20_000):
            warn(index)
        grown = held() - before
    assert grown < _SLACK, grown
    assert log.errors_of("t19999.db") == ['sync error db=t19999.db error="s3: timeout"']
    assert log.errors_of("t0.db") == []
    assert log.errors_of(f"t{20_000 - MAX_DATABASES}.db") != []
    log.forget("t19999.db")
    assert log.errors_of("t19999.db") == []
