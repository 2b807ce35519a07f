"""12. Credential rotation: S3 keys rotated while durable writes stream in; the pause in
replication, what the writes caught in it wait, and whether an acknowledged row is missing
from the replica afterwards."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import _apps
from ._common import (
    S3,
    Context,
    Figure,
    Target,
    child_env,
    measure,
    median,
    quantile,
    run_quiet,
    spread,
)
from ._litestream import create_db
from ._proc import cpu_seconds, descendants, is_litestream
from ._servers import Server, uvicorn_server

WRITERS = 16  # concurrent clients, each POSTing one durable write after another
WARMUP = 0.5  # s of writes left out of the latency figures (connections, first syncs)
STEADY = 2.0  # s of writes before the first rotation
SPACING = 1.0  # s between rotations
POLL = 0.01  # s between looks at the server's rotation count (key files)
NONE = Target("==", 0)
T = TypeVar("T")


# -- the app under uvicorn -------------------------------------------------------------


def _rotation(supervisor: Any) -> dict[str, Any]:
    """The last rotation as the status records it (``credentials``)."""
    credentials = supervisor.status()["credentials"]
    return {"rotations": credentials["rotations"], "pause_s": credentials["last_pause_s"],
            "source": credentials["source"], "state": supervisor.state.value,
            "pid": supervisor.pid, "restarts": supervisor.restarts}


def factory() -> Starlette:
    """uvicorn --factory bench.rotation:factory: BENCH_DATABASE replicated to
    BENCH_REPLICA_URL, with the keys from the environment, or from the two files in
    BENCH_KEY_DIR. ``POST /write`` commits its body and awaits ``durable(request)``,
    ``POST /rotate`` rotates to the keys it is sent, ``GET /rotation`` tells the last."""
    from asgi_litestream import LitestreamLifespan, Supervisor, durable, get_supervisor

    database = os.environ["BENCH_DATABASE"]

    def insert(body: str) -> None:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn, conn:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("INSERT INTO notes (body) VALUES (?)", (body,))

    async def write(request: Request) -> JSONResponse:
        insert((await request.json())["body"])
        await durable(request, timeout=10)
        return JSONResponse({"ok": True}, status_code=201)

    async def rotate(request: Request) -> JSONResponse:
        keys = await request.json()
        supervisor = get_supervisor()
        if not isinstance(supervisor, Supervisor):
            raise TypeError(f"a primary's Supervisor expected, not {supervisor!r}")
        # time.monotonic() is CLOCK_MONOTONIC, the same clock in the bench's process.
        began = time.monotonic()
        await supervisor.rotate_credentials(access_key_id=keys["access_key_id"],
                                            secret_access_key=keys["secret_access_key"])
        return JSONResponse({"began": began, "ended": time.monotonic(),
                             **_rotation(supervisor)})

    async def rotation(request: Request) -> JSONResponse:
        return JSONResponse(_rotation(get_supervisor()))

    options: dict[str, Any] = {}
    if key_dir := os.environ.get("BENCH_KEY_DIR"):
        options = {"access_key_id_file": Path(key_dir, "access-key-id"),
                   "secret_access_key_file": Path(key_dir, "secret-access-key")}
    app = Starlette(routes=[*_apps.ROUTES, Route("/write", write, methods=["POST"]),
                            Route("/rotate", rotate, methods=["POST"]),
                            Route("/rotation", rotation)])
    return LitestreamLifespan(app, database=database,  # type: ignore[return-value]
                              replica_url=os.environ["BENCH_REPLICA_URL"], **options)


# -- the load --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    body: str
    start: float  # time.monotonic() when sent
    end: float  # ... when answered (or failed)
    error: str  # "" for a 201

    @property
    def seconds(self) -> float:
        return self.end - self.start


async def _writer(client: httpx.AsyncClient, n: int, writes: list[_Write],
                  stop: anyio.Event) -> None:
    i = 0
    while not stop.is_set():
        body = f"w{n}-{i}"
        i += 1
        start = time.monotonic()
        try:
            response = await client.post("/write", json={"body": body})
            error = "" if response.status_code == 201 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        writes.append(_Write(body, start, time.monotonic(), error))


async def _under_load(server: Server, work: Callable[[], Awaitable[T]]
                      ) -> tuple[T, list[_Write], float]:
    """``work()`` while WRITERS clients write; returns once it and every write are done,
    with the CPU seconds the clients' process (this one) used meanwhile."""
    cpu = cpu_seconds(os.getpid())
    writes: list[_Write] = []
    stop = anyio.Event()
    limits = httpx.Limits(max_connections=WRITERS)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        async with anyio.create_task_group() as task_group:
            for n in range(WRITERS):
                task_group.start_soon(_writer, client, n, writes, stop)
            try:
                result = await work()
            finally:
                stop.set()
    return result, writes, cpu_seconds(os.getpid()) - cpu


def _new_keys() -> dict[str, str]:
    return {"access_key_id": "AKIA" + uuid.uuid4().hex[:16].upper(),
            "secret_access_key": uuid.uuid4().hex + uuid.uuid4().hex[:8]}


def _track(ctx: Context, server: Server) -> None:
    ctx.track(pid for pid in descendants(server.pid) if is_litestream(pid))


def _restore(ctx: Context, replica_url: str, env: dict[str, str]) -> tuple[set[str] | None, str]:
    """``litestream restore`` into a fresh file: the bodies it holds, or None and why.
    Retried: the replica is read while Litestream still writes to it."""
    folder = ctx.tempdir("rotation-restore")
    why = ""
    for attempt in range(3):
        out = folder / f"restored-{attempt}.db"
        result = run_quiet([ctx.binary, "restore", "-o", out, replica_url], env=env,
                           timeout=120)
        if result.returncode == 0 and out.exists():
            with contextlib.closing(sqlite3.connect(out)) as conn:
                return {row[0] for row in conn.execute("SELECT body FROM notes")}, ""
        why = (result.stderr or result.stdout).strip()[-300:]
        time.sleep(1)
    return None, why


# -- one run: a server, the load, the rotations, the restore ---------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    swaps: list[dict[str, Any]]  # what each rotation reported
    writes: list[_Write]
    warm_until: float
    client_cpu: float  # CPU seconds of the bench's process (the clients) under the load
    after: dict[str, Any]  # GET /rotation once the load stopped
    restored: set[str] | None
    why: str  # when restored is None

    @property
    def acknowledged(self) -> set[str]:
        return {w.body for w in self.writes if not w.error}

    @property
    def failed(self) -> list[_Write]:
        return [w for w in self.writes if w.error]

    @property
    def measured(self) -> list[_Write]:
        return [w for w in self.writes if w.start >= self.warm_until and not w.error]

    @property
    def pauses(self) -> list[float]:
        return [s["pause_s"] for s in self.swaps]

    def counts(self, label: str) -> list[Figure]:
        failed = self.failed
        kinds = sorted({w.error for w in failed})
        seconds = max(w.end for w in self.writes) - min(w.start for w in self.writes)
        acknowledged = self.acknowledged
        figures = [
            Figure(name=f"{label}: requests failed", value=len(failed), unit="requests",
                   target=NONE, detail=f"of {len(self.writes):,} sent"
                   + (f": {', '.join(kinds)}" if kinds else "")),
            Figure(name=f"{label}: rows acknowledged", value=len(acknowledged), unit="rows",
                   detail=f"{len(acknowledged) / seconds:,.0f} durable writes/s over "
                          f"{seconds:.1f} s, {WRITERS} writers, {len(self.swaps)} "
                          f"rotation{'s' * (len(self.swaps) != 1)}; the clients used "
                          f"{self.client_cpu / seconds:.0%} of a core"),
        ]
        if self.restored is None:
            return [*figures, Figure(name=f"{label}: acknowledged rows lost", value=None,
                                     unit="rows", target=NONE,
                                     detail=f"restore failed: {self.why}")]
        return [*figures,
                Figure(name=f"{label}: rows restored", value=len(self.restored), unit="rows",
                       detail="`litestream restore` once the load stopped, the app still "
                              "running"),
                Figure(name=f"{label}: acknowledged rows lost",
                       value=len(acknowledged - self.restored), unit="rows", target=NONE,
                       detail=f"after the run: state {self.after['state']}, restarts "
                              f"counted {self.after['restarts']}, credentials source "
                              f"{self.after['source']}")]


async def _run(ctx: Context, s3: S3, name: str, env: dict[str, str],
               rotate: Callable[[Server, httpx.AsyncClient], Awaitable[list[dict[str, Any]]]]
               ) -> _Run:
    workdir = ctx.tempdir(name)
    create_db(workdir / "app.db")
    replica_url = s3.url(name)
    env = {"BENCH_DATABASE": str(workdir / "app.db"), "BENCH_REPLICA_URL": replica_url,
           **env}
    async with uvicorn_server(ctx, "bench.rotation:factory", env) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=60) as control:
        warm_until = time.monotonic() + WARMUP

        async def work() -> list[dict[str, Any]]:
            await anyio.sleep(WARMUP + STEADY)
            swaps = await rotate(server, control)
            await anyio.sleep(SPACING)  # the tail: writes after the last swap
            return swaps

        swaps, writes, client_cpu = await _under_load(server, work)
        after = (await control.get("/rotation")).json()
        _track(ctx, server)
        restored, why = await anyio.to_thread.run_sync(
            _restore, ctx, replica_url,
            child_env(LITESTREAM_ACCESS_KEY_ID=s3.access_key_id,
                      LITESTREAM_SECRET_ACCESS_KEY=s3.secret_access_key))
    return _Run(swaps, writes, warm_until, client_cpu, after, restored, why)


def _ms(seconds: Sequence[float], q: float) -> float:
    return quantile(seconds, q) * 1000


async def _by_call(ctx: Context, s3: S3, rotations: int) -> list[Figure]:
    async def rotate(server: Server, control: httpx.AsyncClient) -> list[dict[str, Any]]:
        swaps = []
        for index in range(rotations):
            if index:
                await anyio.sleep(SPACING)
            response = await control.post("/rotate", json=_new_keys())
            response.raise_for_status()
            swaps.append(response.json())
            _track(ctx, server)
        return swaps

    run = await _run(ctx, s3, "rotation-call", {
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
    }, rotate)
    windows = [(s["began"], s["ended"]) for s in run.swaps]

    def caught(write: _Write, began: float, ended: float) -> bool:
        """In flight at some moment of the rotate_credentials call."""
        return write.start < ended and write.end > began

    during = [w.seconds for w in run.measured
              if any(caught(w, *window) for window in windows)]
    outside = [w.seconds for w in run.measured
               if not any(caught(w, *window) for window in windows)]
    # How long after the call returned the last write it caught was answered: the
    # catch-up (its sync through the new Litestream), beyond the pause itself.
    tails = [max(w.end for w in run.measured if caught(w, began, ended)) - ended
             for began, ended in windows
             if any(caught(w, began, ended) for w in run.measured)]
    calls = [ended - began for began, ended in windows]
    pids = {s["pid"] for s in run.swaps}
    label = "call"
    figures = [
        Figure(name=f"{label}: rotation pause (flush → running again), p50",
               value=median(run.pauses) * 1000, unit="ms",
               detail=f"{spread(run.pauses)}; the rotate_credentials call: "
                      f"{spread(calls)}; {len(pids)} new Litestream pids"),
        Figure(name=f"{label}: rotation pause, max", value=max(run.pauses) * 1000,
               unit="ms", detail=", ".join(f"{p * 1000:.0f}" for p in run.pauses) + " ms"),
    ]
    if during:
        figures += [
            Figure(name=f"{label}: durable write overlapping a swap, p50",
                   value=_ms(during, 0.5), unit="ms",
                   detail=f"n={len(during)}: in flight at some moment of a "
                          f"rotate_credentials call; the last write each swap caught was "
                          f"answered after the call returned: {spread(tails)}"),
            Figure(name=f"{label}: durable write overlapping a swap, p99",
                   value=_ms(during, 0.99), unit="ms"),
            Figure(name=f"{label}: durable write overlapping a swap, max",
                   value=max(during) * 1000, unit="ms"),
        ]
    figures += [
        Figure(name=f"{label}: durable write outside swaps, p50", value=_ms(outside, 0.5),
               unit="ms", detail=f"n={len(outside)}, after the first {WARMUP:g} s"),
        Figure(name=f"{label}: durable write outside swaps, p99", value=_ms(outside, 0.99),
               unit="ms", detail=f"max {max(outside) * 1000:.1f} ms"),
    ]
    return figures + run.counts(label)


def _write_keys(folder: Path, keys: dict[str, str]) -> None:
    """Both files replaced, one after the other (each atomically, as a writer that
    renames would; Kubernetes swaps both at once, through a symbolic link)."""
    for name, key in (("access-key-id", keys["access_key_id"]),
                      ("secret-access-key", keys["secret_access_key"])):
        part = folder / f".{name}.new"
        part.write_text(key + "\n")
        os.replace(part, folder / name)


async def _by_files(ctx: Context, s3: S3, rotations: int) -> list[Figure]:
    folder = ctx.tempdir("rotation-keys")
    _write_keys(folder, {"access_key_id": s3.access_key_id,
                         "secret_access_key": s3.secret_access_key})
    seen: list[float] = []  # files written → the rotation done, as polled

    async def rotate(server: Server, control: httpx.AsyncClient) -> list[dict[str, Any]]:
        swaps = []
        for index in range(rotations):
            if index:
                await anyio.sleep(SPACING)
            before = (await control.get("/rotation")).json()["rotations"]
            written = time.monotonic()
            _write_keys(folder, _new_keys())
            with anyio.fail_after(30):
                while True:
                    now = (await control.get("/rotation")).json()
                    # rotations counts up once the restart is done; the state is running again
                    # (and pause_s set, in the same step of the server's loop) after it.
                    if now["rotations"] > before and now["state"] == "running":
                        break
                    await anyio.sleep(POLL)
            seen.append(time.monotonic() - written)
            swaps.append(now)
            _track(ctx, server)
        return swaps

    run = await _run(ctx, s3, "rotation-files", {"BENCH_KEY_DIR": str(folder)}, rotate)
    label = "key files"
    latencies = [w.seconds for w in run.measured]
    return [
        Figure(name=f"{label}: rotation pause (flush → running again), p50",
               value=median(run.pauses) * 1000, unit="ms",
               detail=", ".join(f"{p * 1000:.0f}" for p in run.pauses) + " ms; files "
                      f"written → rotation seen done: {spread(seen)} (the watcher reads "
                      "them every health_interval, 2 s)"),
        Figure(name=f"{label}: durable write, max over the run", value=max(latencies) * 1000,
               unit="ms", detail=f"p50 {_ms(latencies, 0.5):.1f} / p99 "
                                 f"{_ms(latencies, 0.99):.1f} ms, n={len(latencies)}"),
        *run.counts(label),
    ]


@measure("rotation", title="12. Credential rotation", order=120, how=f"""
    One uvicorn process, the app with LitestreamLifespan at default settings on an S3
    replica (moto on loopback, which does not check keys: any new key strings work, so this
    measures the mechanics of a rotation, not S3's acceptance of the keys). {WRITERS}
    clients in the bench's process (httpx, keep-alive) each POST one row after another to
    a route that commits it and awaits `durable(request)`; each row's body is unique. After
    {WARMUP + STEADY:g} s, `POST /rotate` calls `supervisor.rotate_credentials(...)` with new
    keys, 5 times 1 s apart (2 with `--quick`), then 1 s more of writes. The pause is the
    library's own record of each rotation (`last_pause_s`: from the flush to Litestream
    running again; the status's `credentials.last_pause_s`). A write overlaps a swap when
    it was in flight at any moment of a `rotate_credentials` call (the server reports the
    call's start and end on CLOCK_MONOTONIC, the clock the clients time with); the others,
    after the first {WARMUP:g} s, are the steady state. Latencies are the clients' (request
    sent → answer). Once the load stops, `litestream restore` (the real binary) copies the
    replica into a new file while the app still runs: every acknowledged (201) row must be
    in it. Then the same through key files (`access_key_id_file`,
    `secret_access_key_file`): new keys written into both (each replaced by a rename), 2
    times (1 with `--quick`), the watcher's default health_interval of 2 s; the bench polls
    the server every {POLL * 1000:g} ms until the rotation is done.""")
async def rotation(ctx: Context) -> list[Figure]:
    s3 = ctx.s3()
    return [*await _by_call(ctx, s3, ctx.n(5, 2)), *await _by_files(ctx, s3, ctx.n(2, 1))]
