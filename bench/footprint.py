"""7. Footprint: memory and idle CPU of an app with the middleware, minus one without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._common import Context, Figure, Target, child_env, measure, median
from ._litestream import create_db
from ._proc import cpu_seconds, descendants, is_litestream, rss_mb
from ._servers import uvicorn_server


@measure("footprint", title="7. Footprint", order=70, how="""
    Two uvicorn processes side by side, idle: the plain app and the app with
    LitestreamLifespan (file replica, default settings: Litestream syncing every 1 s, the
    health poller every 2 s). After 2 s to settle: resident memory (VmRSS of
    /proc/PID/status) of each server process, and CPU time (utime + stime of /proc/PID/stat)
    over 10 s idle, as a percentage of one core. Litestream's own figures are its child
    process's, reported apart (they are not in the server's). Then where the memory
    goes, in a fresh interpreter that has imported FastAPI (bench/_footprint_probe.py, 5 runs,
    medians): resident memory and time of `from asgi_litestream import
    LitestreamLifespan`; resident memory the running app adds beyond the import, after
    3 s with Litestream; the threads; and, in a separate run traced by tracemalloc from
    just after the import, the Python memory our own modules hold (caches, buffers,
    histories), by module.
    The import target is missed by our own code: no third-party module is imported any
    more, and the 58 modules (packages included) the core needs cost about 0.5 ms each
    to execute (dataclass creation, compiled patterns); meeting 20 ms would mean fewer,
    larger modules or lazier records.""")
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
    probes = [await anyio.to_thread.run_sync(_probe, workdir, False)
              for _ in range(ctx.n(5, 2))]
    traced = await anyio.to_thread.run_sync(_probe, workdir, True)
    import_mb = median([p["imported"] - p["before"] for p in probes])
    running_mb = median([p["running"] - p["imported"] for p in probes])
    top = ", ".join(f"{name} {kb:g} KB" for name, kb in list(traced["ours_kb"].items())[:4])
    return [
        Figure(name="server RSS, with - without the middleware",
               value=rss["with"] - rss["plain"], unit="MB", target=Target("<=", 6.0),
               detail=f"{rss['with']:.1f} vs {rss['plain']:.1f} MB"),
        Figure(name="import of the middleware: time", unit="ms",
               value=median([p["import_s"] for p in probes]) * 1000,
               target=Target("<=", 20.0),
               detail="`from asgi_litestream import LitestreamLifespan` after FastAPI; "
                      "`import asgi_litestream` alone loads 3 modules"),
        Figure(name="import of the middleware: resident memory", value=import_mb, unit="MB",
               target=Target("<=", 4.5), detail="code of the modules the middleware needs"),
        Figure(name="running app, beyond the import", value=running_mb, unit="MB",
               detail="Litestream running 3 s: tasks, pipes, the worker thread's stack"),
        Figure(name="threads beside the event loop", value=len(traced["threads"]) - 1,
               unit="", detail=", ".join(t for t in traced["threads"] if t != "MainThread")),
        Figure(name="Python memory our modules hold, running", unit="KB",
               value=traced["ours_total_kb"], detail=f"top: {top}"),
        Figure(name="server idle CPU, with - without", value=cpu["with"] - cpu["plain"],
               unit="% of a core", detail=f"{cpu['with']:.2f} vs {cpu['plain']:.2f} % over "
                                          f"{idle} s (10 ms ticks)"),
        Figure(name="Litestream's own RSS", value=rss["litestream"], unit="MB"),
        Figure(name="Litestream's own idle CPU", value=cpu["litestream"], unit="% of a core"),
    ]


def _probe(workdir: Path, trace: bool) -> dict[str, Any]:
    """One run of bench/_footprint_probe.py in a fresh interpreter."""
    argv = [sys.executable, "-m", "bench._footprint_probe", str(workdir / "app.db"),
            f"file://{workdir}/probe-replica", "3", *(["trace"] if trace else [])]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=child_env(),
                         cwd=Path(__file__).parent.parent).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
