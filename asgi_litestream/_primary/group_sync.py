"""Group commit: concurrent durable waits share syncs.

Group commit: while one sync is in flight, callers that arrive join the *next*
one, which starts only after they arrived; so no caller is ever released by a
sync that began before its own commit, and under load there is one sync in flight
plus one forming, never one sync per request.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._exceptions import SyncError

# Seconds; a durable wait is one or two syncs, tens of milliseconds on a healthy replica.
SYNC_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class SyncStats:
    """Durable waits, as group commit saw them."""

    callers: int = 0
    failures: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(SYNC_BUCKETS))

    def record(self, seconds: float, *, ok: bool) -> None:
        self.callers += 1
        self.failures += not ok
        self.latency_sum += seconds
        for index, bound in enumerate(SYNC_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1


class _Round:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupSync:
    """Runs ``sync_once`` in rounds that every concurrent caller shares."""

    def __init__(self, sync_once: Callable[[], Awaitable[Any]],
                 task_group: anyio.abc.TaskGroup) -> None:
        self._sync_once = sync_once
        self._task_group = task_group
        self._forming: _Round | None = None  # the round new callers join
        self._running = False
        self.rounds = 0  # syncs actually sent: far fewer than callers under load

    @property
    def idle(self) -> bool:
        """No round running or forming: nothing is lost if this group is dropped."""
        return self._forming is None and not self._running

    async def wait(self, timeout: float) -> Any:
        """Return the result of a sync that started after this call began."""
        if self._forming is None:
            self._forming = _Round()
            if not self._running:
                # In the supervisor's task group: a caller that gives up (timeout,
                # client gone) must not cancel the round the others wait on.
                try:
                    self._task_group.start_soon(self._run_rounds)
                except RuntimeError:  # the task group is gone: shut down
                    self._forming = None
                    raise SyncError("Litestream has shut down: nothing replicates") from None
                self._running = True
        joined = self._forming
        with anyio.move_on_after(timeout):
            await joined.done.wait()
        if not joined.done.is_set():
            raise SyncError(f"the replica did not confirm the commit within {timeout}s")
        if joined.error is not None:
            raise joined.error
        return joined.result

    async def _run_rounds(self) -> None:
        try:
            while self._forming is not None:
                current, self._forming = self._forming, None
                self.rounds += 1
                try:
                    current.result = await self._sync_once()
                except Exception as exc:
                    current.error = exc
                except BaseException:
                    # Cancelled (shutdown): its callers must not read it as success.
                    current.error = SyncError("the sync was cancelled (shutting down)")
                    raise
                finally:
                    current.done.set()
        finally:
            self._running = False


_SWEEP_ABOVE = 64  # groups in the map before idle ones are looked for


class DurableSyncs:
    """One :class:`GroupSync` per database, and a durable wait fanned out over them.

    A folder's database gets its group when a wait names it, and loses it once no
    wait uses it: a folder may hold any number of databases over time, and the
    groups in memory are only those being waited on."""

    def __init__(self, paths: Iterable[Path], sync_once: Callable[[Path], Awaitable[int | None]],
                 task_group: anyio.abc.TaskGroup,
                 in_folder: Callable[[Path], bool] = lambda _: False) -> None:
        self._sync_once, self._task_group = sync_once, task_group
        self._groups = {path: self._group(path) for path in paths}
        self._listed = frozenset(self._groups)  # named one by one: kept for good
        self._in_folder = in_folder
        self._retired_rounds = 0  # of the folder groups dropped
        self._sweep_above = _SWEEP_ABOVE + len(self._listed)
        self.stats = SyncStats()

    def _group(self, path: Path) -> GroupSync:
        return GroupSync(functools.partial(self._sync_once, path), self._task_group)

    @property
    def rounds(self) -> int:
        """How many syncs were sent (far fewer than callers under load)."""
        return self._retired_rounds + sum(group.rounds for group in self._groups.values())

    def _drop_if_idle(self, path: Path, group: GroupSync) -> None:
        # A later wait makes a fresh group, whose first round starts after it: what
        # a dropped group knew (no round in flight) is nothing that wait needs.
        if path not in self._listed and group.idle and self._groups.get(path) is group:
            del self._groups[path]
            self._retired_rounds += group.rounds

    async def wait(self, timeout: float, database: str | os.PathLike[str] | None = None
                   ) -> dict[str, int]:
        """``{path: replicated txid}`` once every database (or only ``database``) has
        everything committed before the call in its replica; SyncError otherwise."""
        if database is None:
            if not self._groups:
                raise SyncError("the databases are a folder's: name the one written, e.g. "
                                "durable(request, database=path)")
            if len(self._groups) > 1:
                return await self._wait_all(timeout, dict(self._groups))
            path, group = next(iter(self._groups.items()))
        else:
            path = Path(database).absolute()
            found = self._groups.get(path)
            if found is None:
                if not self._in_folder(path):
                    known = ", ".join(str(p) for p in self._groups) or "none listed by file"
                    raise SyncError(f"{path} is not one of the replicated databases: {known}")
                found = self._groups[path] = self._group(path)
            group = found
        # One database (the common case): awaited here, with no task to spawn: under
        # load this path runs once per durable request, a task group for a lone wait
        # was half of its cost.
        began = time.monotonic()
        try:
            replicated = await group.wait(timeout)
        except SyncError:
            self.stats.record(time.monotonic() - began, ok=False)
            raise
        finally:
            self._tidy(((path, group),))
        self.stats.record(time.monotonic() - began, ok=True)
        return {} if replicated is None else {str(path): replicated}

    async def _wait_all(self, timeout: float, groups: dict[Path, GroupSync]) -> dict[str, int]:
        positions: dict[str, int] = {}
        errors: list[SyncError] = []

        async def wait_one(path: Path, group: GroupSync) -> None:
            try:
                replicated = await group.wait(timeout)
            except SyncError as exc:
                errors.append(exc)  # raised plain below, not in an ExceptionGroup
                return
            if replicated is not None:
                positions[str(path)] = replicated

        began = time.monotonic()
        try:
            async with anyio.create_task_group() as task_group:
                for path, group in groups.items():
                    task_group.start_soon(wait_one, path, group)
        finally:
            self._tidy(groups.items())
        self.stats.record(time.monotonic() - began, ok=not errors)
        if errors:
            raise errors[0]
        return positions

    def _tidy(self, waited: Iterable[tuple[Path, GroupSync]]) -> None:
        for path, group in waited:
            self._drop_if_idle(path, group)
        if len(self._groups) > self._sweep_above:
            # A wait that timed out left its group mid-round; idle by now. Swept
            # when the map doubled, so each wait pays O(1) on average.
            for path, group in list(self._groups.items()):
                self._drop_if_idle(path, group)
            self._sweep_above = max(2 * len(self._groups), _SWEEP_ABOVE)
