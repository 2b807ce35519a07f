"""11. Read replicas: a primary and a follower (``role="follower"``) as two uvicorn
processes sharing a replica; how far the follower trails, what read-your-writes waits,
and how long its first restore takes."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from . import _apps
from ._common import Context, Figure, measure, median, quantile
from ._litestream import create_db
from ._proc import descendants, is_litestream
from ._servers import Server, uvicorn_server

COMMITS = 60  # plain commits on the primary, one every GAP seconds
GAP = (0.1, 0.2)
READS = 21  # durable write on the primary, then a read that waits for it on the follower
POLL = 0.01  # the follower's read route and its status route, polled this often
DATABASE_MB = 1.0  # the primary's database when a follower first restores it
POSITION = "litestream-position"
FOLLOW_INTERVAL = 1.0  # the default: the sync interval


# -- the two apps under uvicorn ----------------------------------------------------------


def _connect(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path, timeout=5))


def primary() -> ASGIApp:
    """uvicorn --factory bench.replicas:primary: BENCH_DATABASE replicated to
    BENCH_REPLICA_URL; ``POST /notes`` commits a row (201 with its id),
    ``POST /notes/durable`` also awaits ``durable(request)`` and answers its positions."""
    from asgi_litestream import LitestreamLifespan, durable, position_header

    path = Path(os.environ["BENCH_DATABASE"])

    def insert() -> int:
        with _connect(path) as conn, conn:
            return int(conn.execute("INSERT INTO notes (body) VALUES ('bench')").lastrowid
                       or 0)

    async def create(request: Request) -> JSONResponse:
        return JSONResponse({"id": insert()}, status_code=201)

    async def create_durably(request: Request) -> JSONResponse:
        row = insert()
        replicated = await durable(request, timeout=10)
        return JSONResponse({"id": row, "replicated": replicated,
                             "position": position_header(replicated)}, status_code=201)

    app = Starlette(routes=[*_apps.ROUTES, Route("/notes", create, methods=["POST"]),
                            Route("/notes/durable", create_durably, methods=["POST"])])
    return LitestreamLifespan(app, database=path,
                              replica_url=os.environ["BENCH_REPLICA_URL"])


def follower() -> ASGIApp:
    """uvicorn --factory bench.replicas:follower: a read replica at BENCH_DATABASE of
    BENCH_REPLICA_URL; ``GET /notes`` answers the last row id its copy holds, after
    ``read_your_writes`` (``?wait=`` seconds) when the client sends a position."""
    from asgi_litestream import LitestreamLifespan, connect_readonly, read_your_writes

    path = Path(os.environ["BENCH_DATABASE"])

    async def last(request: Request) -> JSONResponse:
        await read_your_writes(request, timeout=float(request.query_params.get("wait", 2)))
        with contextlib.closing(connect_readonly(path)) as conn:
            (row,) = conn.execute("SELECT coalesce(max(id), 0) FROM notes").fetchone()
        return JSONResponse({"last": row})

    app = Starlette(routes=[*_apps.ROUTES, Route("/notes", last)])
    return LitestreamLifespan(app, database=path,
                              replica_url=os.environ["BENCH_REPLICA_URL"], role="follower")


# -- set-up ------------------------------------------------------------------------------


def _fill(path: Path, megabytes: float) -> None:
    """The primary's database, WAL mode, grown with 1 KB rows to ``megabytes`` MiB."""
    create_db(path)
    with _connect(path) as conn:
        while (conn.execute("PRAGMA page_count").fetchone()[0]
               * conn.execute("PRAGMA page_size").fetchone()[0] < megabytes * 2**20):
            with conn:
                conn.executemany("INSERT INTO notes (body) VALUES (?)",
                                 ((os.urandom(512).hex(),) for _ in range(64)))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _env(ctx: Context, kind: str, workdir: Path) -> dict[str, str]:
    """Both apps' environment but the database: the replica URL and its credentials."""
    if kind == "file":
        return {"BENCH_REPLICA_URL": f"file://{workdir}/replica"}
    s3 = ctx.s3()
    return {"BENCH_REPLICA_URL": s3.url("app"), "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
            "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key}


def _track(ctx: Context, server: Server) -> None:
    ctx.track(pid for pid in descendants(server.pid) if is_litestream(pid))


@asynccontextmanager
async def _follower(ctx: Context, env: dict[str, str],
                    timings: list[dict[str, float]]) -> AsyncIterator[Server]:
    """A follower in a fresh folder; appends to ``timings`` the seconds from its
    process start to: the app answering, the copy in place (``ready``), status 200."""
    copy = ctx.tempdir("replicas-follower") / "app.db"
    began = time.perf_counter()
    async with uvicorn_server(ctx, "bench.replicas:follower",
                              {**env, "BENCH_DATABASE": str(copy)}) as server:
        found = {"answers": time.perf_counter() - began}
        async with httpx.AsyncClient(timeout=10) as client:
            with anyio.fail_after(60):
                while True:
                    response = await client.get(server.url + _apps.STATUS_PATH)
                    now = time.perf_counter() - began
                    if response.json().get("ready"):
                        found.setdefault("ready", now)
                    if response.status_code == 200:
                        found["status_200"] = now
                        break
                    await anyio.sleep(POLL)
        timings.append(found)
        _track(ctx, server)
        try:
            yield server
        finally:
            _track(ctx, server)  # a restarted Litestream, if any


# -- the figures' samples ------------------------------------------------------------------


async def _lag(primary: Server, follower: Server, commits: int,
               rng: random.Random) -> list[float]:
    """A commit every 100 to 200 ms on the primary; seconds from each 201 until the
    follower's read route shows the row. Ids rise and the copy applies transactions in
    order, so the last id it shows marks every earlier row visible too."""
    committed: dict[int, float] = {}
    visible: dict[int, float] = {}
    writing = True

    async def watch(client: httpx.AsyncClient) -> None:
        while writing or len(visible) < len(committed):
            last = (await client.get(follower.url + "/notes")).raise_for_status().json()
            now = time.perf_counter()
            for row in committed.keys() - visible.keys():
                if row <= last["last"]:
                    visible[row] = now
            await anyio.sleep(POLL)

    async with (httpx.AsyncClient(timeout=10) as writer,
                httpx.AsyncClient(timeout=10) as reader):
        with anyio.fail_after(commits * GAP[1] + 60):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(watch, reader)
                for _ in range(commits):
                    response = await writer.post(primary.url + "/notes")
                    committed[response.raise_for_status().json()["id"]] = time.perf_counter()
                    await anyio.sleep(rng.uniform(*GAP))
                writing = False
    return [visible[row] - committed[row] for row in committed]


@dataclass
class _Reads:
    """Read-your-writes samples: seconds of each durable write and of the read after it,
    reads refused (503: not caught up within the wait) and reads that missed the row."""

    writes: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    refused: int = 0
    stale: int = 0


async def _read_your_writes(primary: Server, follower: Server, reads: int,
                            rng: random.Random, found: _Reads) -> None:
    """A durable write on the primary, then a read on the follower carrying its
    position (the read waits in ``read_your_writes`` until the copy holds it)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(reads):
            # A random phase against the follow tick: a read returns just after one.
            await anyio.sleep(rng.uniform(0, FOLLOW_INTERVAL))
            began = time.perf_counter()
            write = (await client.post(primary.url + "/notes/durable")).raise_for_status()
            found.writes.append(time.perf_counter() - began)
            header = {POSITION: write.json()["position"]}  # named by the replica
            began = time.perf_counter()
            read = await client.get(follower.url + "/notes?wait=10", headers=header)
            took = time.perf_counter() - began
            if read.status_code != 200:
                found.refused += 1
                continue
            found.reads.append(took)
            if read.json()["last"] < write.json()["id"]:
                found.stale += 1


# -- per replica ---------------------------------------------------------------------------


def _ms(seconds: Sequence[float], q: float) -> str:
    """The ``q`` quantile of ``seconds``, in whole milliseconds."""
    return f"{quantile(seconds, q) * 1000:.0f}" if seconds else "n/a"


async def _kind(ctx: Context, kind: str, rounds: int, commits: int,
                reads: int) -> list[Figure]:
    workdir = ctx.tempdir(f"replicas-{kind}")
    database = workdir / "primary" / "app.db"
    database.parent.mkdir()
    await anyio.to_thread.run_sync(_fill, database, DATABASE_MB)
    size = database.stat().st_size / 2**20
    env = _env(ctx, kind, workdir)
    rng = random.Random(kind)
    restores: list[dict[str, float]] = []
    lag: list[float] = []
    ryw = _Reads()
    async with uvicorn_server(ctx, "bench.replicas:primary",
                              {**env, "BENCH_DATABASE": str(database)}) as primary_server:
        _track(ctx, primary_server)
        async with httpx.AsyncClient(timeout=30) as client:  # the replica holds it all
            (await client.post(primary_server.url + "/notes/durable")).raise_for_status()
        # Each follower's ticks keep one phase against the primary's: the lag of one
        # follower spans a sync interval from an offset of its own. Several followers,
        # several offsets.
        for _ in range(rounds):
            async with _follower(ctx, env, restores) as follower_server:
                lag += await _lag(primary_server, follower_server, commits // rounds, rng)
                await _read_your_writes(primary_server, follower_server, reads // rounds,
                                        rng, ryw)

    label = "file replica" if kind == "file" else "S3 replica (moto)"
    restore = [r["status_200"] for r in restores]
    return [
        Figure(name=f"{label}: follower lag p50", value=median(lag) * 1000, unit="ms",
               detail=f"min {_ms(lag, 0)} / p90 {_ms(lag, 0.9)} / p99 {_ms(lag, 0.99)} / "
                      f"max {_ms(lag, 1)} ms, n={len(lag)}; commit (201 of POST /notes) → "
                      f"row on GET /notes, {len(restores)} followers"),
        Figure(name=f"{label}: read-your-writes wait p50",
               value=median(ryw.reads) * 1000 if ryw.reads else None, unit="ms",
               detail=f"p99 {_ms(ryw.reads, 0.99)} ms, n={len(ryw.reads)}; the durable "
                      f"write before it: p50 {_ms(ryw.writes, 0.5)} / p99 "
                      f"{_ms(ryw.writes, 0.99)} ms; 503s {ryw.refused}, stale reads "
                      f"{ryw.stale}"),
        Figure(name=f"{label}: first restore → status 200", value=median(restore) * 1000,
               unit="ms",
               detail=f"{size:.1f} MiB database; process start → app answers "
                      f"{_ms([r['answers'] for r in restores], 0.5)} → copy ready "
                      f"{_ms([r['ready'] for r in restores], 0.5)} → status 200 ms "
                      f"(medians of {len(restores)}: "
                      f"{', '.join(f'{s * 1000:.0f}' for s in restore)} ms)"),
    ]


ROUNDS = 3  # followers per replica, one after the other


@measure("replicas", title="11. Read replicas", order=110, how=f"""
    A primary (LitestreamLifespan) and a follower (`role="follower"`, `litestream restore
    -f`) as two uvicorn processes at default settings (sync interval 1 s, follow interval
    = sync interval, health probe every 2 s), sharing a file replica, then an S3 replica
    (moto, started by the bench on a loopback port). The primary's database holds
    {DATABASE_MB:g} MiB (1 KB rows) before it starts; one durable write makes the replica
    hold it all. Then {ROUNDS} followers one after the other, each in an empty folder
    (each one's follow ticks keep their own phase against the primary's sync ticks, which
    shifts its whole lag distribution: several followers, several phases). First
    restore: from the follower's process start to its status route answering 200
    (polled every {POLL * 1000:.0f} ms; the app's first answer, polled every 50 ms, and
    the copy `ready` are shown on the way). Lag: {COMMITS // ROUNDS} plain commits per
    follower (`POST /notes`, no `durable()`) a random 100 to 200 ms apart, while the
    follower's read route (`connect_readonly`, `SELECT max(id)`) is polled every
    {POLL * 1000:.0f} ms; per commit, the time from its 201 to the first answer that
    shows it (ids rise and the copy applies transactions in order). Read-your-writes:
    {READS // ROUNDS} per follower, after a random pause of 0 to 1 s (a read returns just
    after a follow tick), a durable write (`POST /notes/durable`, its positions through
    `position_header`), then a GET on the follower with `Litestream-Position` whose
    handler awaits `read_your_writes`: the time of that GET. `--quick`: one follower,
    15 commits, 5 reads.""")
async def replicas(ctx: Context) -> list[Figure]:
    rounds, commits, reads = ctx.n(ROUNDS, 1), ctx.n(COMMITS, 15), ctx.n(READS, 5)
    return [*await _kind(ctx, "file", rounds, commits, reads),
            *await _kind(ctx, "s3", rounds, commits, reads)]
