"""3. Startup: lifespan start → ready, against a bare `litestream replicate`."""

from __future__ import annotations

import random

import anyio.to_thread

from . import _apps
from ._asgi import lifespan
from ._common import Context, Figure, Target, measure, median, spread
from ._litestream import BareLitestream, create_db


async def _library(ctx: Context) -> float:
    workdir = ctx.tempdir("startup")
    create_db(workdir / "app.db")
    app = _apps.litestream(str(workdir / "app.db"), f"file://{workdir}/replica")
    async with lifespan(app) as running:
        return running.startup_s


def _bare(ctx: Context) -> float:
    workdir = ctx.tempdir("startup-bare")
    create_db(workdir / "app.db")
    bare = BareLitestream(ctx, workdir / "app.db", f"file://{workdir}/replica")
    try:
        return bare.start()
    finally:
        bare.stop()


@measure("startup", title="3. Startup", order=30, how="""
    Library: the time from sending `lifespan.startup` to the app with LitestreamLifespan
    until `lifespan.startup.complete` comes back — options validated, binary found, config
    written, Litestream spawned, its control socket answering with our child's pid and
    listing the database, first health poll, then the inner app's own startup. By hand:
    exec of `litestream replicate -config FILE` (hand-written config: the same database,
    a file:// replica, control socket enabled) until `GET /info` answers on the control
    socket, polled every 1 ms over a raw unix socket. Each run uses a fresh directory with
    an existing database; 15 runs of each, in shuffled order. Ratio of the medians.
    Where the floor is (measured by step, in-process): before the spawn, validation (0.2
    ms), one thread hop that checks the files, finds the binary, makes the private
    folder and writes the config (1.1 ms) and the stale-file guard (0.25 ms), which must
    finish before Litestream may start; after the control socket answers, about 1 ms
    (publishing the state, the inner app's own startup). About 3 to 4 ms on Litestream's
    24 to 26 ms: 1.12 to 1.15 at best on this machine, so the 1.1 target is missed by
    that floor plus the run's noise (±0.1 between runs).""")
async def startup(ctx: Context) -> list[Figure]:
    times: dict[str, list[float]] = {"library": [], "bare": []}
    for _ in range(ctx.n(15, 4)):
        for variant in random.sample(list(times), 2):
            if variant == "library":
                times[variant].append(await _library(ctx))
            else:
                times[variant].append(await anyio.to_thread.run_sync(_bare, ctx))
    library, bare = median(times["library"]), median(times["bare"])
    return [
        Figure(name="start → ready, library ÷ bare litestream", value=library / bare,
               unit="x", target=Target("<=", 1.1),
               detail=f"{library * 1000:.0f} vs {bare * 1000:.0f} ms"),
        Figure(name="library: lifespan.startup → startup.complete", value=library * 1000,
               unit="ms", detail=spread(times["library"])),
        Figure(name="bare: exec → control socket answers /info", value=bare * 1000,
               unit="ms", detail=spread(times["bare"])),
    ]
