"""What the routes see of a running replication service: a narrow, read-only view
(ReplicationService is one), and the records it hands over (_primary/status.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .._config.settings import Settings
from .._primary.status import ServiceFacts, StatusSnapshot


class ServiceView(Protocol):
    """A replication service, as the status route, the metrics route and the status
    page read it: from memory only, never asking a process per request."""

    @property
    def settings(self) -> Settings: ...

    @property
    def binary(self) -> Path: ...

    @property
    def config_path(self) -> Path: ...

    def status(self) -> StatusSnapshot:
        """The status snapshot, now."""
        ...

    def status_key(self) -> tuple[object, ...]:
        """Changes whenever status() would."""
        ...

    def facts(self) -> ServiceFacts: ...

    def litestream_env(self) -> dict[str, str]:
        """A copy of the environment Litestream runs with now (rotated keys included),
        for a one-shot command such as the page's listing of restore points."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every secret to scrub from output now, rotated-in keys included."""
        ...

    def history(self) -> dict[str, list[tuple[float, float | None]]]:
        """Per listed database: (unix time, replication delay) over the last hour."""
        ...
