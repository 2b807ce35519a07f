"""Keep a SQLite database continuously backed up by running Litestream beside an ASGI app."""

from importlib import metadata as _metadata

from ._backups import RestorePoint, list_restore_points, restore_to
from ._config import Settings
from ._databases import Database
from ._exceptions import (
    BinaryError,
    BinaryNotFoundError,
    ChecksumMismatchError,
    ConfigError,
    DownloadError,
    LitestreamError,
    RestoreError,
    StartupError,
    SupervisorLookupError,
    SyncError,
    UnsupportedPlatformError,
)
from ._follow_copy import connect_readonly
from ._handle import Supervisor
from ._middleware import LitestreamLifespan
from ._read_replica import ReadReplica
from ._registry import get_supervisor, start_litestream, status, stop_litestream
from ._starlette import durable, durable_endpoint, position_header, read_your_writes
from ._status import State
from ._verify import Verification

try:
    __version__ = _metadata.version("asgi-litestream")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BinaryError",
    "BinaryNotFoundError",
    "ChecksumMismatchError",
    "ConfigError",
    "Database",
    "DownloadError",
    "LitestreamError",
    "LitestreamLifespan",
    "ReadReplica",
    "RestoreError",
    "RestorePoint",
    "Settings",
    "StartupError",
    "State",
    "Supervisor",
    "SupervisorLookupError",
    "SyncError",
    "UnsupportedPlatformError",
    "Verification",
    "__version__",
    "connect_readonly",
    "durable",
    "durable_endpoint",
    "get_supervisor",
    "list_restore_points",
    "position_header",
    "read_your_writes",
    "restore_to",
    "start_litestream",
    "status",
    "stop_litestream",
]
