"""Run in a fresh interpreter by measure 7: where the middleware's memory goes.

Prints one JSON document: the import (time by ``-X importtime``'s own clock is left to
the caller; here resident memory before and after), then the app running for a few
seconds with Litestream (resident memory, the threads, and the Python memory our own
modules hold, by module, traced from just after the import).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(database: str, replica_url: str, seconds: float, trace: bool) -> None:
    import anyio
    import fastapi  # noqa: F401  (as the issue measures: what we add to a FastAPI app)
    from starlette.applications import Starlette

    gc.collect()
    before = rss_mb()
    began = time.perf_counter()
    from asgi_litestream import LitestreamLifespan

    import_s = time.perf_counter() - began
    gc.collect()
    imported = rss_mb()
    from starlette.middleware import Middleware

    from bench._asgi import lifespan

    app = Starlette(middleware=[Middleware(LitestreamLifespan, database=database,
                                           replica_url=replica_url)])
    if trace:  # its own bookkeeping weighs: the resident figures come from a run without
        tracemalloc.start(1)
    found: dict[str, object] = {}

    async def run() -> None:
        async with lifespan(app):
            await anyio.sleep(seconds)
            gc.collect()
            ours: Counter[str] = Counter()
            stats = tracemalloc.take_snapshot().statistics("filename") if trace else []
            for stat in stats:
                name = stat.traceback[0].filename
                if "asgi_litestream" in name:
                    ours[name.split("asgi_litestream", 1)[1].lstrip("/")] += stat.size
            found.update(
                running=rss_mb(), threads=sorted(t.name for t in threading.enumerate()),
                tasks=len(os.listdir("/proc/self/task")),
                ours_kb={name: round(size / 1024, 1) for name, size in ours.most_common(8)},
                ours_total_kb=round(sum(ours.values()) / 1024, 1))

    anyio.run(run)
    found.update(before=before, imported=imported, import_s=import_s)
    print(json.dumps(found))  # noqa: T201  (measure 7 reads it)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), trace=sys.argv[4:] == ["trace"])
