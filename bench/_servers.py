"""Real servers and real load: uvicorn running one of bench._apps, and wrk."""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from ._common import Context, child_env, free_port, stop_process, wait_http
from ._proc import cpu_seconds, descendants, is_litestream


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int


# The routes as an authorized scraper sees them (the full details, the metrics): the
# larger answer, and the one these figures have always measured. Anonymous probes get
# a few bytes instead.
_DETAILS = {"ASGI_LITESTREAM_PUBLIC_DETAILS": "1"}


@asynccontextmanager
async def uvicorn_server(ctx: Context, factory: str,
                         env: dict[str, str] | None = None) -> AsyncIterator[Server]:
    """``uvicorn --factory bench._apps:<factory>`` (or ``module:factory``) on a free port,
    one process; stopped with SIGINT, a graceful shutdown (the lifespan flushes and stops
    Litestream)."""
    port = free_port()
    target = factory if ":" in factory else f"bench._apps:{factory}"
    argv = [sys.executable, "-m", "uvicorn", "--factory", target,
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", "--lifespan", "on"]
    process = ctx.popen(argv, log=ctx.root / f"uvicorn-{port}.log",
                        env={**child_env(**_DETAILS), **(env or {})},
                        cwd=Path(__file__).parent.parent)
    server = Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        await anyio.to_thread.run_sync(
            lambda: wait_http(server.url + "/json", process, timeout=60))
        ctx.track(pid for pid in descendants(process.pid) if is_litestream(pid))
        yield server
    finally:
        await anyio.to_thread.run_sync(lambda: stop_process(process, signal.SIGINT))


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    per_cpu_second: float  # requests ÷ CPU seconds of the server and its children


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


async def wrk(server: Server, path: str, *, seconds: float, connections: int,
              script: Path | None = None) -> Load:
    """One wrk thread (the server has the other core), ``connections`` keep-alive;
    ``script`` is a wrk Lua script (to POST, say)."""
    pids = [server.pid, *descendants(server.pid)]
    cpu = sum(cpu_seconds(pid) for pid in pids)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    result = await anyio.run_process([*argv, server.url + path], check=True)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    return parse_wrk(result.stdout.decode(), cpu)


def parse_wrk(out: str, cpu_seconds: float) -> Load:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise ValueError(f"{pattern!r} not in wrk's output:\n{out}")
        return match

    def latency_ms(percent: int) -> float:
        match = find(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$")
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = int(find(r"^\s*(\d+) requests in")[1])
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Load(rps=float(find(r"^Requests/sec:\s+([\d.]+)")[1]), requests=requests,
                p50_ms=latency_ms(50), p99_ms=latency_ms(99), errors=errors,
                per_cpu_second=requests / max(cpu_seconds, 0.01))
