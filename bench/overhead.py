"""1. Request overhead: the app's throughput with the middleware ÷ without it."""

from __future__ import annotations

import random
import time
from contextlib import AsyncExitStack

from starlette.types import ASGIApp

from . import _apps
from ._asgi import call, lifespan
from ._common import Context, Figure, Target, measure, median
from ._litestream import create_db
from ._servers import has_wrk, uvicorn_server, wrk

TARGET = Target(">=", 0.98)
# Two copies of the plain app: their ratio (A/A) is the noise floor of the method.
VARIANTS = ("plain", "plain (A/A)", "litestream", "pure_asgi", "base_http")
# Over the wire the floor (pure_asgi) is lost in the noise: spend the time on rounds.
WIRE_VARIANTS = ("plain", "plain (A/A)", "litestream", "base_http")
Samples = dict[str, list[tuple[float, float]]]  # variant → [(req/s, req per CPU-second)]


def _figures(where: str, samples: Samples) -> list[Figure]:
    """Each ratio is the median over rounds of (variant ÷ the mean of the two plain
    copies in the same round): a round's variants ran back to back, so slow drift in
    the machine's speed cancels out, and two references halve the weight of either."""

    def ratios(variant: str, index: int) -> list[float]:
        return [v[index] / ((p[index] + q[index]) / 2) for v, p, q in
                zip(samples[variant], samples["plain"], samples["plain (A/A)"], strict=True)]

    def describe(variant: str) -> str:
        rps = median([s[0] for s in samples[variant]])
        plain = median([s[0] for s in samples["plain"] + samples["plain (A/A)"]])
        rounds = ratios(variant, 0)
        return (f"{rps:,.0f} vs {plain:,.0f} req/s; rounds {min(rounds):.2f} to "
                f"{max(rounds):.2f}; per CPU-second {median(ratios(variant, 1)):.3f}")

    aa = median([q[0] / p[0] for p, q in zip(samples["plain"], samples["plain (A/A)"],
                                             strict=True)])
    figures = [
        Figure(name=f"{where}: with ÷ without the middleware",
               value=median(ratios("litestream", 0)), unit="x", target=TARGET,
               noise=abs(1 - aa),
               detail=f"{describe('litestream')}; A/A (plain ÷ plain) {aa:.3f}"),
    ]
    if samples["pure_asgi"]:
        figures.append(Figure(name=f"{where}: no-op pure ASGI middleware ÷ without (floor)",
                              value=median(ratios("pure_asgi", 0)), unit="x",
                              detail=describe("pure_asgi")))
    figures.append(Figure(name=f"{where}: no-op BaseHTTPMiddleware ÷ without (anchor)",
                          value=median(ratios("base_http", 0)), unit="x",
                          detail=describe("base_http")))
    return figures


async def _in_process(ctx: Context) -> list[Figure]:
    workdir = ctx.tempdir("overhead")
    create_db(workdir / "app.db")
    apps: dict[str, ASGIApp] = {
        "plain": _apps.plain(), "plain (A/A)": _apps.plain(), "pure_asgi": _apps.pure_asgi(),
        "base_http": _apps.base_http(),
        "litestream": _apps.litestream(str(workdir / "app.db"), f"file://{workdir}/replica"),
    }
    samples: Samples = {v: [] for v in VARIANTS}
    async with AsyncExitStack() as stack:
        for app in apps.values():  # Litestream runs, and its poller shares the loop
            await stack.enter_async_context(lifespan(app))
        for variant in VARIANTS:  # warm up
            for _ in range(500):
                await call(apps[variant], _apps.JSON_PATH)
        for _ in range(ctx.n(60, 5)):
            for variant in random.sample(VARIANTS, len(VARIANTS)):
                app = apps[variant]
                # BaseHTTPMiddleware is ~10x slower: fewer requests, same time.
                requests = 300 if variant == "base_http" else 3000
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(requests):
                    await call(app, _apps.JSON_PATH)
                samples[variant].append((requests / (time.perf_counter() - wall),
                                         requests / (time.process_time() - cpu)))
    return _figures("in-process", samples)


async def _over_the_wire(ctx: Context) -> list[Figure]:
    if not has_wrk():
        return [Figure(name="over the wire: with ÷ without the middleware", value=None,
                       target=TARGET, detail="skipped: wrk is not installed "
                       "(bench/run.sh installs it with apt-get)")]
    workdir = ctx.tempdir("overhead-wire")
    create_db(workdir / "app.db")
    env = {"BENCH_DATABASE": str(workdir / "app.db"),
           "BENCH_REPLICA_URL": f"file://{workdir}/replica"}
    samples: Samples = {v: [] for v in VARIANTS}
    errors = 0
    async with AsyncExitStack() as stack:
        servers = {v: await stack.enter_async_context(
            uvicorn_server(ctx, v.split()[0], env)) for v in WIRE_VARIANTS}
        for server in servers.values():
            await wrk(server, _apps.JSON_PATH, seconds=1, connections=32)  # warm up
        for _ in range(ctx.n(15, 2)):
            for variant in random.sample(WIRE_VARIANTS, len(WIRE_VARIANTS)):
                load = await wrk(servers[variant], _apps.JSON_PATH, seconds=1, connections=32)
                samples[variant].append((load.rps, load.per_cpu_second))
                errors += load.errors
    figures = _figures("over the wire (uvicorn + wrk)", samples)
    if errors:
        figures.append(Figure(name="over the wire: failed requests", value=errors))
    return figures


@measure("overhead", title="1. Request overhead", order=10, how="""
    One Starlette app with one JSON route: alone; with LitestreamLifespan (Litestream
    running, file replica, default settings); with a no-op pure ASGI middleware (the floor:
    what any middleware layer costs); and with a no-op BaseHTTPMiddleware (the anchor to
    beat). In-process: GET requests sent straight into the ASGI app in 60 rounds of 3,000
    per variant (300 for BaseHTTPMiddleware), in a shuffled order each round. Over the
    wire: one uvicorn process per variant (but the floor, lost in the noise there),
    `wrk -t1 -c32 -d1s`, 15 shuffled rounds. The plain app runs as two identical copies.
    Value: the median over rounds of (variant ÷ the mean of the two plain copies in the
    same round). A/A: one plain copy ÷ the other, so its distance from 1 is the method's
    noise; a figure closer to its target than that is marked "within noise".
    "Per CPU-second" divides requests by the CPU time the app (in-process) or the server
    and its children, Litestream included (over the wire), used: on a shared machine it is
    less sensitive to time stolen by other processes.""")
async def overhead(ctx: Context) -> list[Figure]:
    return [*await _in_process(ctx), *await _over_the_wire(ctx)]
