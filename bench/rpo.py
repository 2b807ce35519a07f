"""6. RPO: how long a committed row waits before it can be restored from the replica."""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

from . import _apps
from ._asgi import lifespan
from ._common import S3, Context, Figure, child_env, measure, median, spread
from ._litestream import BareLitestream, create_db, insert_rows, restored_bodies

SYNC_INTERVAL = 1.0  # Litestream's default, and the library's


def _txid(name: str) -> int:
    """``<min>-<max>.ltx`` → max. (A file replica keeps them under ``ltx/<level>/``,
    S3 under ``<path>/<level, 4 digits>/``.)"""
    return int(name.rsplit("/", 1)[-1].removesuffix(".ltx").split("-")[1], 16)


def _file_latest(root: Path) -> Callable[[], int]:
    def latest() -> int:
        return max((_txid(p.name) for p in root.rglob("*.ltx")), default=0)
    return latest


def _s3_latest(s3: S3, prefix: str) -> Callable[[], int]:
    client = s3.client()

    def latest() -> int:
        listing = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/")
        return max((_txid(o["Key"]) for o in listing.get("Contents", [])
                    if o["Key"].endswith(".ltx")), default=0)
    return latest


def _sample(ctx: Context, database: Path, latest: Callable[[], int], replica_url: str,
            env: dict[str, str], samples: int) -> list[float]:
    """Commit a row; time until the replica lists a new LTX file that holds it."""
    found = []
    for _ in range(samples):
        time.sleep(random.uniform(0, SYNC_INTERVAL))  # a random phase against the sync tick
        before = latest()
        row = uuid.uuid4().hex
        insert_rows(database, [row])
        start = time.perf_counter()
        while True:
            now = latest()
            if now > before:
                seen = time.perf_counter() - start
                if row in restored_bodies(ctx, replica_url, env):
                    found.append(seen)
                    break
                before = now  # a sync that began before our commit: keep waiting
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"the row never reached {replica_url}")
            time.sleep(0.005)
    return found


class _Replica:
    """Where a run replicates to, how to list it, and the credentials to reach it."""

    def __init__(self, ctx: Context, kind: str, workdir: Path) -> None:
        self.env = child_env()
        self.options: dict[str, str] = {}  # LitestreamLifespan's keywords
        if kind == "file":
            self.url = f"file://{workdir}/replica"
            self.latest = _file_latest(workdir / "replica")
            return
        s3 = ctx.s3()
        self.url, self.latest = s3.url("app"), _s3_latest(s3, "app")
        self.env.update(LITESTREAM_ACCESS_KEY_ID=s3.access_key_id,
                        LITESTREAM_SECRET_ACCESS_KEY=s3.secret_access_key)
        self.options = {"access_key_id": s3.access_key_id,
                        "secret_access_key": s3.secret_access_key}


async def _kind(ctx: Context, kind: str, samples: int) -> list[Figure]:
    times: dict[str, list[float]] = {}
    for variant in ("library", "by hand"):
        workdir = ctx.tempdir(f"rpo-{kind}")
        database = workdir / "app.db"
        create_db(database)
        replica = _Replica(ctx, kind, workdir)
        sample = functools.partial(_sample, ctx, database, replica.latest, replica.url,
                                   replica.env, samples)
        if variant == "library":
            app = _apps.litestream(str(database), replica.url, **replica.options)
            async with lifespan(app):
                times[variant] = await anyio.to_thread.run_sync(sample)
        else:
            bare = BareLitestream(ctx, database, replica.url, replica.env)
            await anyio.to_thread.run_sync(bare.start)
            try:
                times[variant] = await anyio.to_thread.run_sync(sample)
            finally:
                await anyio.to_thread.run_sync(bare.stop)
    label = "file replica" if kind == "file" else "S3 replica (moto)"
    return [Figure(name=f"{label}, {variant}: commit → restorable",
                   value=median(found) * 1000, unit="ms", detail=spread(found))
            for variant, found in times.items()]


@measure("rpo", title="6. RPO", order=60, how="""
    Default settings (`sync-interval` 1 s), a file replica and an S3 replica (moto, started
    by the bench on a loopback port). After a random pause of 0 to 1 s (a random phase
    against Litestream's sync tick), commit one row, then list the replica's LTX files
    every 5 ms until one appears whose max TXID is past what the replica held before the
    commit, and check with `litestream restore` that the restored database holds the row
    (if not, keep waiting for the next file); the figure is the time to that listing.
    Library: the app with LitestreamLifespan (its health poller also asks Litestream for a
    sync, without waiting, every 2 s); by hand: `litestream replicate` with the same
    replica and sync interval. 10 commits each.""")
async def rpo(ctx: Context) -> list[Figure]:
    samples = ctx.n(10, 2)
    return [*await _kind(ctx, "file", samples), *await _kind(ctx, "s3", samples)]
