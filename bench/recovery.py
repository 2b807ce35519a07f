"""4. Recovery: SIGKILL Litestream → the status route says running again."""

from __future__ import annotations

import os
import signal
import time

import anyio

from asgi_litestream import Supervisor

from . import _apps
from ._asgi import lifespan
from ._common import Context, Figure, Target, measure, median, spread
from ._litestream import create_db

TARGET = Target("<=", 250)  # ms, for the first restart


async def _kill_and_time(supervisor: Supervisor) -> float:
    """SIGKILL the child; seconds until status() reports running with a new pid."""
    status = supervisor.status
    old = status()["pid"]
    start = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    while True:
        now = status()
        if now["status"] == "running" and now["pid"] not in (None, old):
            return time.perf_counter() - start
        await anyio.sleep(0.001)


async def _first_restart(ctx: Context) -> float:
    workdir = ctx.tempdir("recovery")
    create_db(workdir / "app.db")
    app = _apps.litestream(str(workdir / "app.db"), f"file://{workdir}/replica")
    async with lifespan(app) as running:
        supervisor = running.state["litestream"]
        ctx.track([supervisor.pid])
        elapsed = await _kill_and_time(supervisor)
        ctx.track([supervisor.pid])
        return elapsed


async def _back_to_back(ctx: Context, kills: int) -> list[float]:
    workdir = ctx.tempdir("recovery-seq")
    create_db(workdir / "app.db")
    app = _apps.litestream(str(workdir / "app.db"), f"file://{workdir}/replica",
                           max_restarts=100)
    times = []
    async with lifespan(app) as running:
        supervisor = running.state["litestream"]
        for _ in range(kills):
            ctx.track([supervisor.pid])
            times.append(await _kill_and_time(supervisor))
        ctx.track([supervisor.pid])
    return times


@measure("recovery", title="4. Recovery", order=40, how="""
    SIGKILL of the Litestream child, then the status the route serves
    (`Supervisor.status()`) polled every 1 ms until it says `running` with a new pid.
    First restart: 20 fresh lifespans (app with LitestreamLifespan, default settings), one
    kill each — the library restarts at once after a first crash. Back to back: one
    lifespan (max_restarts raised to 100 so it does not give up), killed again as soon as
    it is back, 5 times: the policy's backoff (0, 0.5, 1, 2 s...) shows. Litestream run by
    hand has no supervisor: after a SIGKILL it stays down until someone restarts it (a
    systemd unit with `Restart=always` waits `RestartSec`, 100 ms by default, then pays a
    full start, ~30 ms here).""")
async def recovery(ctx: Context) -> list[Figure]:
    first = [await _first_restart(ctx) for _ in range(ctx.n(20, 4))]
    sequence = await _back_to_back(ctx, ctx.n(5, 3))
    figures = [
        Figure(name="first restart, median", value=median(first) * 1000, unit="ms",
               target=TARGET, detail=spread(first)),
        Figure(name=f"first restart, worst of {len(first)}", value=max(first) * 1000,
               unit="ms", target=TARGET),
    ]
    expected = [0.0] + [0.5 * 2 ** i for i in range(len(sequence) - 1)]
    for index, (took, backoff) in enumerate(zip(sequence, expected, strict=True), 1):
        figures.append(Figure(name=f"back to back: kill #{index}", value=took * 1000,
                              unit="ms", detail=f"policy: {backoff:g} s backoff + restart"))
    return figures
