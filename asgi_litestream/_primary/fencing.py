"""After a fence (_locks/lease_keeper.py): win the lease back and replicate again, unless
the replica moved on meanwhile. Policy beside the lease's mechanism."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .._exceptions import StartupError
from .._litestream.positions import PositionError
from .._locks.lease_keeper import Fenced, LeaseKeeper
from .._state import State
from .guard import Stale

logger = logging.getLogger("asgi_litestream")

# After a fence: how often to ask the replica's position before counting it moved on.
_MOVED_ON_ATTEMPTS = 4


async def hold_the_lease(lease: LeaseKeeper, keeper: Fenced, *,
                         behind: Callable[[], Awaitable[str | None]],
                         give_up: Callable[[], bool]) -> None:
    """While Litestream runs: renew; fenced, kill it at once (no final sync), win the
    lease back and replicate again, unless the replica moved on meanwhile (someone
    else wrote, or it cannot be told): restoring under the running app would swap the
    file beneath its open connections, so it stays fenced and says to restart.
    ``behind()`` says why the files are no longer in step (None: they are)."""
    lease.guard(keeper)
    while await lease.keep() is not None:
        await keeper.kill(State.FENCED)
        if not await lease.acquire(give_up=give_up):
            return
        moved_on = await behind()
        if moved_on is not None:
            await lease.release()
            lease.fence_for_good(moved_on)
            logger.error("litestream %r: FENCED for good: %s. Fix: restart the app; it "
                         "restores the replica's copy before replicating", lease.name,
                         moved_on)
            return
        logger.info("litestream %r: the lease is ours again; replicating again", lease.name)
        try:
            await keeper.start()
        except StartupError as exc:
            # Keep renewing: past the deadline keep() fences and we start over.
            logger.error("litestream %r: could not start Litestream again: %s; NOT "
                         "replicating", lease.name, exc)


async def moved_on(find_stale: Callable[[], Awaitable[Sequence[Stale]]], *,
                   first_delay: float = 1.0) -> str | None:
    """With the lease won back after a fence: why the files here are no longer in
    step with the replica (another host wrote meanwhile), or None. A replica whose
    positions cannot be read (S3's bad day, which fenced us) is asked a few times;
    still unknown, it counts as moved on: staying fenced is safe, guessing is not."""
    delay = first_delay
    for attempt in range(1, _MOVED_ON_ATTEMPTS + 1):
        try:
            stale = await find_stale()
        except PositionError as exc:
            if attempt == _MOVED_ON_ATTEMPTS:
                return ("the replica's position could not be read after the lease was "
                        f"won back, so it may have moved on ({exc})")
            await anyio.sleep(delay)
            delay *= 2
            continue
        if not stale:
            return None
        return f"the replica moved on while this app was fenced: {stale[0].describe()}"
    return None
