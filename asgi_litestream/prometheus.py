"""For apps that already run ``prometheus_client``: our metrics in their registry.

    from prometheus_client import REGISTRY
    from asgi_litestream.prometheus import LitestreamCollector

    REGISTRY.register(LitestreamCollector())          # or LitestreamCollector("orders")

Needs the ``[prometheus]`` extra (``prometheus_client``); the library itself does not.
The series are exactly those of the metrics route; before the app has started (or
after it stopped) the collector yields nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._exceptions import SupervisorLookupError
from ._registry import get_supervisor


class LitestreamCollector:
    """A ``prometheus_client`` collector for the LitestreamLifespan called ``name``."""

    def __init__(self, name: str = "litestream") -> None:
        self.name = name

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            supervisor = get_supervisor(self.name)
        except SupervisorLookupError:
            return
        yield from text_string_to_metric_families(supervisor.metrics())
