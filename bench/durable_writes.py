"""8. Durable writes: 64 concurrent clients, each request one row, durable vs plain.

The app's two routes differ only in ``await durable(request)`` after the commit, so
the ratio is the whole cost of being answered once the row is in the replica. On a
small shared machine that ratio moves with whatever else runs; the app process's CPU
per request (durable minus plain) is the steadier reading of what ``durable()`` itself
costs, Litestream's share of the CPU (per durable request) what the syncs cost beside it.
"""

from __future__ import annotations

import os
import random
import sqlite3

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._common import Context, Figure, Target, measure, median
from ._litestream import create_db
from ._proc import cpu_seconds, descendants
from ._servers import Load, Server, has_wrk, uvicorn_server, wrk

CLIENTS = 64
TARGET = Target(">=", 0.8)  # durable ÷ plain throughput, file and S3 replicas (#24)
_POST = """wrk.method = "POST"
wrk.body = '{"body": "x"}'
wrk.headers["Content-Type"] = "application/json"
"""


def factory() -> Starlette:
    """uvicorn --factory bench.durable_writes:factory (database and replica from env)."""
    from asgi_litestream import LitestreamLifespan, durable, get_supervisor

    database = os.environ["BENCH_DATABASE"]

    def insert() -> None:
        with sqlite3.connect(database, timeout=5) as conn:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("INSERT INTO notes (body) VALUES ('x')")

    async def plain(request: Request) -> JSONResponse:
        insert()
        return JSONResponse({"ok": True}, status_code=201)

    async def durable_route(request: Request) -> JSONResponse:
        insert()
        await durable(request, timeout=10)
        return JSONResponse({"ok": True}, status_code=201)

    async def syncs(request: Request) -> JSONResponse:
        return JSONResponse({"syncs": get_supervisor().sync_rounds})

    app = Starlette(routes=[Route("/plain", plain, methods=["POST"]),
                            Route("/durable", durable_route, methods=["POST"]),
                            Route("/syncs", syncs)])
    return LitestreamLifespan(app, database=database,  # type: ignore[return-value]
                              replica_url=os.environ["BENCH_REPLICA_URL"])


def _syncs(server: Server) -> int:
    return int(httpx.get(server.url + "/syncs", timeout=10).json()["syncs"])


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def _run(ctx: Context, replica: str, env: dict[str, str]) -> list[Figure]:
    workdir = ctx.tempdir(f"durable-{replica}")
    create_db(workdir / "app.db")
    script = workdir / "post.lua"
    script.write_text(_POST)
    loads: dict[str, list[Load]] = {"plain": [], "durable": []}
    # Microseconds of CPU per request: the app's process, and Litestream's.
    app_cpu: dict[str, list[float]] = {"plain": [], "durable": []}
    litestream_cpu: list[float] = []
    requests = syncs = 0
    env = {"BENCH_DATABASE": str(workdir / "app.db"), **env}
    async with uvicorn_server(ctx, "bench.durable_writes:factory", env) as server:
        children = descendants(server.pid)
        for route in loads:  # warm up
            await wrk(server, f"/{route}", seconds=1, connections=CLIENTS, script=script)
        for _ in range(ctx.n(5, 2)):
            for route in random.sample(list(loads), 2):
                before = _syncs(server)
                app, others = cpu_seconds(server.pid), _cpu(children)
                load = await wrk(server, f"/{route}", seconds=2, connections=CLIENTS,
                                 script=script)
                per_request = 1e6 / max(load.requests, 1)
                app_cpu[route].append((cpu_seconds(server.pid) - app) * per_request)
                loads[route].append(load)
                if route == "durable":
                    litestream_cpu.append((_cpu(children) - others) * per_request)
                    requests += load.requests
                    syncs += _syncs(server) - before
    plain_rps = median([load.rps for load in loads["plain"]])
    durable_rps = median([load.rps for load in loads["durable"]])
    errors = {route: sum(load.errors for load in runs) for route, runs in loads.items()}

    def added(attr: str) -> float:
        return (median([getattr(load, attr) for load in loads["durable"]])
                - median([getattr(load, attr) for load in loads["plain"]]))

    label = f"{replica} replica"
    plain_cpu, durable_cpu = median(app_cpu["plain"]), median(app_cpu["durable"])
    return [
        Figure(name=f"{label}: throughput, durable ÷ plain", value=durable_rps / plain_rps,
               unit="x", target=TARGET,
               detail=f"{durable_rps:,.0f} vs {plain_rps:,.0f} req/s, {CLIENTS} clients; "
                      f"non-2xx or socket errors: durable {errors['durable']}, "
                      f"plain {errors['plain']}"),
        Figure(name=f"{label}: p50 latency added", value=added("p50_ms"), unit="ms",
               detail=f"durable p50 {median([x.p50_ms for x in loads['durable']]):.1f} ms"),
        Figure(name=f"{label}: p99 latency added", value=added("p99_ms"), unit="ms",
               detail=f"durable p99 {median([x.p99_ms for x in loads['durable']]):.1f} ms"),
        Figure(name=f"{label}: app CPU per request added", value=durable_cpu - plain_cpu,
               unit="µs", detail=f"the app's process: durable {durable_cpu:.0f} µs, plain "
                                  f"{plain_cpu:.0f} µs; Litestream: "
                                  f"{median(litestream_cpu):.0f} µs per durable request"),
        Figure(name=f"{label}: durable requests per sync (group commit)",
               value=requests / max(syncs, 1), unit="x",
               detail=f"{requests:,} requests, {syncs:,} syncs"),
    ]


@measure("durable", title="8. Durable writes", order=80, how=f"""
    One uvicorn process, the app with LitestreamLifespan at default settings; two routes
    that insert one row each, one of them then awaiting `durable(request)` (answered only
    once the row is in the replica). `wrk -t1 -c{CLIENTS} -d2s` POSTs to each route, 5
    rounds in shuffled order, medians; once with a file replica, once with an S3 replica
    (moto on loopback). Requests per sync counts the syncs group commit actually sent.
    CPU per request: the uvicorn process's CPU time (and, apart, Litestream's) over each
    run ÷ the requests it answered.""")
async def durable_writes(ctx: Context) -> list[Figure]:
    if not has_wrk():
        return [Figure(name="durable ÷ plain throughput", value=None, target=TARGET,
                       detail="skipped: wrk is not installed")]
    figures = await _run(ctx, "file", {"BENCH_REPLICA_URL": f"file://{ctx.root}/replica"})
    s3 = ctx.s3()
    figures += await _run(ctx, "S3", {
        "BENCH_REPLICA_URL": s3.url("durable"),
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
    })
    return figures

