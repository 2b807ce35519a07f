"""Prometheus text: Litestream's own ``/metrics``, scraped in the background and
filtered to its ``litestream_*`` families, and the writer our own families use.

A scrape of ours never waits on Litestream: :class:`LitestreamScrape` keeps the last
answer in memory, and the metrics route (_web/metrics.py) renders from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from .loopback_http import LoopbackHTTPError, request


class LitestreamScrape:
    """Litestream's own metrics, fetched in the background: a scrape of ours never
    waits on Litestream. ``text`` is the last answer ("" when there is none)."""

    def __init__(self) -> None:
        self.text = ""

    async def run(self, address: Callable[[], str | None], interval: float) -> None:
        await anyio.sleep(1.0)  # not during the app's own startup
        while True:
            found = address()
            self.text = await _scrape(found) if found else ""  # down: no stale series
            await anyio.sleep(interval)


async def _scrape(address: str) -> str:
    """Litestream's ``litestream_*`` series at ``host:port``; "" if it does not answer.
    Filtered once here, not on every render: at a thousand databases the whole text
    is hundreds of kilobytes."""
    host, _, port = address.rpartition(":")
    try:
        reply = await request("GET", "/metrics", tcp=(host or "127.0.0.1", int(port)),
                              timeout=2.0)
    except (LoopbackHTTPError, ValueError):
        return ""
    if reply.status != 200:
        return ""
    return "\n".join(litestream_series(reply.body.decode(errors="replace")))


class MetricsWriter:
    """Families of the text exposition; a sample of None is left out, and a family
    with no sample at all."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, Any], float | int | None]]) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{format_labels(labels)} {format_value(value)}"
                       for labels, value in rows]


def litestream_series(text: str) -> Sequence[str]:
    """Litestream's own ``litestream_*`` families, HELP and TYPE lines included."""
    return [line for line in text.splitlines()
            if line.startswith("litestream_")
            or (line.startswith(("# HELP litestream_", "# TYPE litestream_")))]


def format_labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not math.isfinite(value):
        return "+Inf" if value > 0 else ("-Inf" if value < 0 else "NaN")
    return repr(value) if isinstance(value, float) else str(value)
