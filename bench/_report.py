"""The results as a terminal table and as BENCHMARKS.md, with the machine they ran on."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from ._common import Figure, Spec

Results = list[tuple[Spec, list[Figure]]]


def progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def command() -> str:
    """How this run was started (bench/run.sh passes its own command line on)."""
    return os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "bench",
                                                          *sys.argv[1:]])


def machine(binary: Path) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next((int(line.split()[1]) / 1024 / 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0.0)
    os_name = platform.system()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    litestream = subprocess.run([str(binary), "version"], capture_output=True, text=True,
                                check=False).stdout.strip()
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                             check=False).stdout.split("\n")[0].split(" [")[0]
    except OSError:
        wrk = "not installed"
    return {
        "Library": _revision(),
        "CPU": f"{cpu}, {os.cpu_count()} cores, {memory:.1f} GiB RAM",
        "OS": f"{os_name}, kernel {platform.release()} ({platform.machine()})",
        "Python": platform.python_version(),
        "Litestream": litestream,
        "Packages": ", ".join(f"{name} {version(name)}" for name in
                              ("asgi-litestream", "starlette", "uvicorn", "anyio", "httpx")),
        "Load generator": wrk,
        # A shared or busy machine shows in the A/A ratios; this says how busy it was.
        "Load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _revision() -> str:
    """The library's git commit, and whether its sources differ from it."""
    root = Path(__file__).parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "asgi_litestream", "pyproject.toml")
    return f"git {commit}" + (" with uncommitted changes to the library" if dirty else "")


def table(results: Results, elapsed: float, left_behind: list[str]) -> str:
    rows = [("figure", "value", "target", "met", "detail")]
    for spec, figures in results:
        rows.append((spec.title, "", "", "", ""))
        rows += [("  " + f.name, f.shown, f.target_shown, f.verdict, f.detail)
                 for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
             + "  " + row[4] for row in rows]
    lines.insert(1, "-" * (sum(widths) + 8 + 6))
    lines.append(f"\ntotal {elapsed:.0f} s; processes left behind: "
                 f"{', '.join(left_behind) or 'none'}")
    return "\n".join(line.rstrip() for line in lines)


def markdown(results: Results, elapsed: float, left_behind: list[str],
             machine: dict[str, str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "asgi-litestream against its alternatives: the same app without it, Litestream run "
        "by hand, and Starlette's `BaseHTTPMiddleware` as the anchor for request overhead. "
        "Benchmarks report; they do not assert. Medians over repeated runs unless a "
        "distribution is shown.",
        "",
        f"- Command: `{command()}` (from the repository root)",
        f"- Date: {now}; the whole run took {elapsed / 60:.1f} min",
        f"- Processes left behind: {', '.join(left_behind) or 'none'}",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        "",
        "## Results",
        "",
        "| measure | figure | value | target | met | detail |",
        "|---|---|---:|---|---|---|",
    ]
    for spec, figures in results:
        for index, f in enumerate(figures):
            title = spec.title if index == 0 else ""
            out.append(f"| {title} | {f.name} | {f.shown} | {f.target_shown} | {f.verdict} "
                       f"| {f.detail} |")
    missed = [(spec, f) for spec, figures in results for f in figures if f.met is False]
    out += ["", "Missed: " + ("; ".join(f"{spec.title}: {f.name} ({f.shown}, target "
                                        f"{f.target_shown})" for spec, f in missed) or "none"), ""]
    out += ["## How each figure is measured", ""]
    for spec, _ in results:
        out += [f"**{spec.title}.** {spec.how}", ""]
    out += [
        "## Adding a measure",
        "",
        "Write `bench/<name>.py` with an async function decorated with "
        "`@measure(key, title=..., order=..., how=...)` from `bench._common`, returning a "
        "list of `Figure`s (give a `Target` to judge one). `python -m bench` imports every "
        "public module of the package, so nothing else changes. Shared pieces: "
        "`bench/_common.py` (registry, statistics, `Context` with temp dirs, tracked "
        "processes and `Context.s3()` on moto), `_asgi.py` (lifespan driver, in-process "
        "requests), `_servers.py` (`uvicorn_server`, `wrk`), `_litestream.py` "
        "(`BareLitestream`, SQLite writes, restore), `_proc.py` (/proc readings), `_apps.py` "
        "(the apps under test).",
        "",
    ]
    return "\n".join(out)
