"""7. Footprint: memory and idle CPU of an app with the middleware, minus one without."""

from __future__ import annotations

import anyio

from ._common import Context, Figure, measure
from ._litestream import create_db
from ._proc import cpu_seconds, descendants, is_litestream, rss_mb
from ._servers import uvicorn_server


@measure("footprint", title="7. Footprint", order=70, how="""
    Two uvicorn processes side by side, idle: the plain app and the app with
    LitestreamLifespan (file replica, default settings: Litestream syncing every 1 s, the
    health poller every 2 s). After 2 s to settle: resident memory (VmRSS of
    /proc/PID/status) of each server process, and CPU time (utime + stime of /proc/PID/stat)
    over 10 s idle, as a percentage of one core. Litestream's own figures are its child
    process's, reported apart (they are not in the server's).""")
async def footprint(ctx: Context) -> list[Figure]:
    workdir = ctx.tempdir("footprint")
    create_db(workdir / "app.db")
    env = {"BENCH_DATABASE": str(workdir / "app.db"),
           "BENCH_REPLICA_URL": f"file://{workdir}/replica"}
    idle = ctx.n(10, 3)
    async with uvicorn_server(ctx, "plain", env) as plain, \
            uvicorn_server(ctx, "litestream", env) as with_it:
        [litestream] = [pid for pid in descendants(with_it.pid) if is_litestream(pid)]
        pids = {"plain": plain.pid, "with": with_it.pid, "litestream": litestream}
        await anyio.sleep(2)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await anyio.sleep(idle)
        cpu = {name: (cpu_seconds(pid) - before[name]) / idle * 100
               for name, pid in pids.items()}
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
    return [
        Figure(name="server RSS, with - without the middleware",
               value=rss["with"] - rss["plain"], unit="MB",
               detail=f"{rss['with']:.1f} vs {rss['plain']:.1f} MB"),
        Figure(name="server idle CPU, with - without", value=cpu["with"] - cpu["plain"],
               unit="% of a core", detail=f"{cpu['with']:.2f} vs {cpu['plain']:.2f} % over "
                                          f"{idle} s (10 ms ticks)"),
        Figure(name="Litestream's own RSS", value=rss["litestream"], unit="MB"),
        Figure(name="Litestream's own idle CPU", value=cpu["litestream"], unit="% of a core"),
    ]
