"""At shutdown: hand over to the other workers, flush every database, stop Litestream,
release the lease; and how long all of that may take (:func:`shutdown_limit`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._config.settings import Settings
from .._litestream.process import REAP_LIMIT
from .._locks.workers import Leadership
from .._state import Role, State
from .keeper import Keeper

if TYPE_CHECKING:
    from .._locks.lease_keeper import LeaseKeeper

logger = logging.getLogger("asgi_litestream")

# How long a leader waits at shutdown for the other workers to stop writing.
MAX_HANDOVER_WAIT = 5.0
# Beyond the sum of every bounded step: event-loop lag, closing sockets.
_SLACK = 5.0


def shutdown_limit(settings: Settings, *, databases: int, lease: bool) -> float:
    """The most a shutdown may take, each of its steps bounded on its own: starting
    Litestream once more for the final flush, waiting for the other workers, flushing
    ``databases`` databases (each up to ``flush_timeout``, one after another at worst),
    stopping Litestream, releasing the lease. A safety net that never cuts a flush
    short: past it, something hung that nothing else bounds."""
    flushing = (settings.flush_timeout + 2) * max(databases, 1)
    return (2 * settings.startup_timeout + 2 * MAX_HANDOVER_WAIT + flushing
            + settings.stop_timeout + REAP_LIMIT + (settings.lease_ttl if lease else 0.0)
            + _SLACK)


async def hand_over_and_stop(*, role: Role | None, keeper: Keeper, leadership: Leadership,
                             lease: LeaseKeeper | None, settings: Settings) -> None:
    """The shutdown of one worker: the leader waits for the others to stop writing,
    flushes and stops Litestream; a standby outlives the leader's flush; then the
    lease and the locks are given up."""
    if role is Role.LEADER and keeper.child is None and keeper.state in (
        State.RESTARTING, State.FAILED,
    ) and keeper.refused is None:
        await keeper.start_for_the_final_flush()
    stopped_by_the_app = role is Role.LEADER and keeper.state is State.STOPPED
    not_the_writer = (keeper.state in (State.WAITING_FOR_LEASE, State.FENCED)
                      or keeper.refused is not None)
    keeper.begin_closing()
    keeper.wake()
    try:
        leadership.leave()
        if not_the_writer:
            logger.info("litestream %r: %s at shutdown: not the writer, nothing to "
                        "flush", settings.name, keeper.state.value)
        elif stopped_by_the_app:
            logger.warning("litestream %r: no final flush: the app stopped Litestream "
                           "(stop_litestream) and did not start it again; rows written "
                           "since are not in the replica", settings.name)
        elif role is Role.LEADER:
            if keeper.child is not None:
                keeper.set_state(State.STOPPING)  # standbys wait for our flush
                await leadership.wait_for_others(min(settings.flush_timeout,
                                                     MAX_HANDOVER_WAIT))
            if await keeper.stop():
                logger.info("litestream %r: final flush complete; every committed "
                            "row is in the replica", settings.name)
            else:
                logger.error("litestream %r: final flush FAILED; the replica may "
                             "miss the latest rows (see the errors above)", settings.name)
        elif role is Role.STANDBY:
            # The leader flushes database after database, each up to flush_timeout.
            flushing = (settings.flush_timeout + 2) * len(settings.databases)
            await leadership.wait_for_leader_to_flush(
                flushing + settings.stop_timeout + MAX_HANDOVER_WAIT)
        if lease is not None:
            await lease.release()  # after the flush: the successor takes it now
    finally:
        async with keeper.lock:  # no takeover or spawn may be half-way now
            leadership.resign()


async def give_up_placing(*, keeper: Keeper, lease: LeaseKeeper | None,
                          leadership: Leadership) -> None:
    """Startup failed or was cut short: stop what may have started, give the lease and
    the locks back."""
    try:
        if keeper.child is not None:  # cut short right after a spawn
            await keeper.kill(State.STOPPED)
        if lease is not None:
            await lease.release()  # the successor takes it now
    finally:
        leadership.resign()
        leadership.leave()
