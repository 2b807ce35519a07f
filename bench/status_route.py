"""2. The status and metrics routes: as fast as a plain JSON route, and no process per
request."""

from __future__ import annotations

import random

from . import _apps
from ._common import Context, Figure, Target, measure, median
from ._litestream import create_db
from ._proc import descendants, is_litestream, watch_children
from ._servers import Load, has_wrk, uvicorn_server, wrk

TARGET = Target(">=", 0.9)
ROUTES = {"status": _apps.STATUS_PATH, "metrics": _apps.METRICS_PATH, "json": _apps.JSON_PATH}


def _names(pids: set[int]) -> str:
    return ", ".join(f"{'Litestream' if is_litestream(p) else 'other'} (pid {p})"
                     for p in sorted(pids)) or "none"


@measure("status", title="2. Status and metrics routes", order=20, how="""
    One uvicorn process serving the app with LitestreamLifespan (file replica, default
    settings). `/_litestream/status` and `/_litestream/metrics` (Prometheus text, ours and
    Litestream's) against the app's own JSON route `/json`: throughput
    with `wrk -t1 -c32 -d1s`, latency with `wrk -t1 -c1 -d1s` (one request at a time, so
    it is the route's own time, not queueing), 5 rounds in shuffled order, medians.
    Latency ratio = JSON route ÷ status route (≥ 0.9: the status route is at most ~11 %
    slower). Processes: every descendant of the server process, sampled every 10 ms
    throughout the load (a process spawned per request would be seen in flight); anything
    but the one Litestream child counts.""")
async def status_route(ctx: Context) -> list[Figure]:
    if not has_wrk():
        return [Figure(name="status ÷ JSON route throughput", value=None, target=TARGET,
                       detail="skipped: wrk is not installed")]
    workdir = ctx.tempdir("status")
    create_db(workdir / "app.db")
    env = {"BENCH_DATABASE": str(workdir / "app.db"),
           "BENCH_REPLICA_URL": f"file://{workdir}/replica"}
    loaded: dict[str, list[Load]] = {route: [] for route in ROUTES}
    single: dict[str, list[Load]] = {route: [] for route in ROUTES}
    async with uvicorn_server(ctx, "litestream", env) as server:
        for path in ROUTES.values():  # warm up
            await wrk(server, path, seconds=1, connections=32)
        with watch_children(server.pid) as seen:
            before = set(seen)
            for _ in range(ctx.n(5, 2)):
                for route in random.sample(list(ROUTES), len(ROUTES)):
                    loaded[route].append(await wrk(server, ROUTES[route], seconds=1,
                                                   connections=32))
                    single[route].append(await wrk(server, ROUTES[route], seconds=1,
                                                   connections=1))
            after = set(descendants(server.pid))
            children = f"before: {_names(before)}; after: {_names(after)}"
        spawned = seen - before

    def rps(route: str) -> float:
        return median([load.rps for load in loaded[route]])

    def p50(route: str) -> float:
        return median([load.p50_ms for load in single[route]])

    def p99(route: str) -> float:
        return median([load.p99_ms for load in single[route]])

    requests = sum(load.requests for runs in (loaded, single) for loads in runs.values()
                   for load in loads)
    errors = sum(load.errors for runs in (loaded, single) for loads in runs.values()
                 for load in loads)
    return [
        Figure(name="throughput, status ÷ JSON route", value=rps("status") / rps("json"),
               unit="x", target=TARGET,
               detail=f"{rps('status'):,.0f} vs {rps('json'):,.0f} req/s (32 connections)"),
        Figure(name="throughput, metrics ÷ JSON route", value=rps("metrics") / rps("json"),
               unit="x", target=TARGET,
               detail=f"{rps('metrics'):,.0f} vs {rps('json'):,.0f} req/s (32 connections)"),
        Figure(name="latency p50, JSON route ÷ status", value=p50("json") / p50("status"),
               unit="x", target=TARGET,
               detail=f"status p50 {p50('status'):.3f} ms / p99 {p99('status'):.3f} ms; JSON "
                      f"p50 {p50('json'):.3f} ms / p99 {p99('json'):.3f} ms (1 connection)"),
        Figure(name="processes spawned while serving", value=len(spawned),
               target=Target("==", 0),
               detail=f"{requests:,} requests; children {children}"
                      + (f"; {errors} non-2xx/socket errors" if errors else "")),
    ]
