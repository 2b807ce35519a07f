"""9. Operator: verify and restore on boot of a 100 MB database; how fast an
unreachable replica fails startup, and how soon it says why."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from . import _apps
from ._asgi import lifespan
from ._common import Context, Figure, Target, free_port, measure

_ROWS, _BLOB = 1600, 64 * 1024  # 100 MiB of incompressible rows


def _big_database(path: Path) -> float:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO blobs (data) VALUES (?)",
                         ((os.urandom(_BLOB),) for _ in range(_ROWS)))
    conn.close()
    return path.stat().st_size / 2**20


class _Attempts(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first: float | None = None
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "cannot read the replica" in record.getMessage():
            self.count += 1
            self.first = self.first or time.perf_counter()


async def _unreachable(ctx: Context) -> list[Figure]:
    workdir = ctx.tempdir("operator-down")
    url = f"s3://bench-down/app?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    app = _apps.litestream(str(workdir / "app.db"), url, restore_timeout=5)
    attempts = _Attempts()
    log = logging.getLogger("asgi_litestream")
    log.addHandler(attempts)
    level = log.level
    log.setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        async with lifespan(app):
            raise AssertionError("started on an unreachable replica")
    except AssertionError:
        raise
    except Exception:  # startup failed, as it must (a RestoreError inside)
        pass
    finally:
        log.removeHandler(attempts)
        log.setLevel(level)
    failed = time.perf_counter() - started
    first = (attempts.first or started) - started
    return [
        Figure(name="unreachable replica: startup fails after (restore_timeout 5 s)",
               value=failed, unit="s", target=Target("<=", 7.0),
               detail=f"{attempts.count} attempts logged, each with the reason"),
        Figure(name="unreachable replica: first reason logged after", value=first * 1000,
               unit="ms", target=Target("<=", 2000)),
    ]


@measure("operator", title="9. Operator", order=90, how=f"""
    A {_ROWS * _BLOB // 2**20} MiB SQLite database of random blobs replicated to a file://
    replica by the library (in-process lifespan). Verify: `await supervisor.verify()` after
    the initial replication (POST /sync with wait, restore into a side file, position and
    `PRAGMA integrity_check`). Restore on boot: the database deleted, then the time from
    `lifespan.startup` to `startup.complete` (dry run, restore, rename, Litestream ready).
    Unreachable replica: an S3 URL whose endpoint is a closed loopback port and
    `restore_timeout=5`, on an empty volume: time until `lifespan.startup.failed`, and
    until the first log line with the reason. One run each.""")
async def operator(ctx: Context) -> list[Figure]:
    workdir = ctx.tempdir("operator")
    database, replica = workdir / "big.db", f"file://{workdir}/replica"
    size = _big_database(database)
    app = _apps.litestream(str(database), replica)
    async with lifespan(app) as running:
        supervisor = running.state["litestream"]
        await supervisor.sync(timeout=120)
        verified = await supervisor.verify()
    for leftover in workdir.glob("big.db*"):
        leftover.unlink()
    async with lifespan(_apps.litestream(str(database), replica)) as restored:
        restore_s = restored.startup_s
    figures = [
        Figure(name=f"verify, {size:.0f} MiB database", value=verified.duration_s, unit="s",
               detail="ok" if verified.ok else f"FAILED: {verified.reason}"),
        Figure(name=f"restore on boot, {size:.0f} MiB database", value=restore_s, unit="s"),
    ]
    return figures + await _unreachable(ctx)
