"""5. Shutdown: what the final flush costs over `litestream sync -wait`, and rows lost."""

from __future__ import annotations

import functools
import random
import time

import anyio.to_thread

from . import _apps
from ._asgi import lifespan
from ._common import Context, Figure, Target, measure, median, spread
from ._litestream import BareLitestream, create_db, insert_rows, restored_bodies

ROWS = 20  # committed one by one, right before the shutdown


class _Run:
    """One start → write → stop → restore cycle in a fresh directory."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        workdir = ctx.tempdir(name)
        self.database = workdir / "app.db"
        self.replica_url = f"file://{workdir}/replica"
        self.rows = [f"{name}-{n}" for n in range(ROWS)]
        create_db(self.database)

    def lost(self) -> int:
        return len(set(self.rows) - restored_bodies(self.ctx, self.replica_url))


async def _library(ctx: Context) -> tuple[float, int]:
    run = _Run(ctx, "shutdown-library")
    async with lifespan(_apps.litestream(str(run.database), run.replica_url)) as running:
        await anyio.to_thread.run_sync(insert_rows, run.database, run.rows)
        took = await running.shutdown()  # lifespan.shutdown → shutdown.complete
    return took, await anyio.to_thread.run_sync(run.lost)


def _by_hand(ctx: Context, *, sync_first: bool) -> tuple[float, int]:
    run = _Run(ctx, "shutdown-bare")
    bare = BareLitestream(ctx, run.database, run.replica_url)
    bare.start()
    insert_rows(run.database, run.rows)
    start = time.perf_counter()
    if sync_first:
        bare.sync_wait()
    bare.stop()  # SIGTERM: Litestream's own final sync, then exit
    return time.perf_counter() - start, run.lost()


@measure("shutdown", title="5. Shutdown", order=50, how="""
    Each run: a fresh database, start, commit 20 rows one by one, stop at once (all within
    Litestream's first second, the case where a plain SIGTERM loses data), then
    `litestream restore` the file replica into a new file and count the missing rows.
    Library: `lifespan.shutdown` → `lifespan.shutdown.complete` (flush via the control
    socket, checked against the replica's txid, then SIGTERM and wait). By hand, careful:
    `litestream sync -wait -socket ... DB`, then SIGTERM and wait for the exit. By hand,
    plain: SIGTERM only. 8 runs of each, shuffled. The extra time is the difference of
    the medians (against SIGTERM only, it is what the flush itself costs).""")
async def shutdown(ctx: Context) -> list[Figure]:
    variants = ("library", "sync", "sigterm")
    times: dict[str, list[float]] = {v: [] for v in variants}
    lost: dict[str, int] = {v: 0 for v in variants}
    runs = ctx.n(8, 3)
    for _ in range(runs):
        for variant in random.sample(variants, len(variants)):
            if variant == "library":
                took, missing = await _library(ctx)
            else:
                took, missing = await anyio.to_thread.run_sync(
                    functools.partial(_by_hand, ctx, sync_first=variant == "sync"))
            times[variant].append(took)
            lost[variant] += missing
    library, careful = median(times["library"]), median(times["sync"])
    committed = f"of {runs * ROWS} committed"
    return [
        Figure(name="stop, library (flush + SIGTERM)", value=library * 1000, unit="ms",
               detail=spread(times["library"])),
        Figure(name="stop by hand: sync -wait, then SIGTERM", value=careful * 1000, unit="ms",
               detail=spread(times["sync"])),
        Figure(name="extra time: library - by hand with sync -wait",
               value=(library - careful) * 1000, unit="ms",
               detail=f"library ÷ by hand {library / careful:.2f}x; library - SIGTERM only "
                      f"{(library - median(times['sigterm'])) * 1000:+.1f} ms (the flush)"),
        Figure(name="rows lost, library", value=lost["library"], unit="rows",
               target=Target("==", 0), detail=committed),
        Figure(name="rows lost, by hand with sync -wait", value=lost["sync"], unit="rows",
               detail=committed),
        Figure(name="rows lost, by hand with SIGTERM only", value=lost["sigterm"],
               unit="rows", detail=f"{committed}; stop {spread(times['sigterm'])}"),
    ]
