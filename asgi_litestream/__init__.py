"""Keep a SQLite database continuously backed up by running Litestream beside an ASGI app."""

from ._config.databases import Database
from ._config.settings import Settings
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
from ._follower.copy import connect_readonly
from ._follower.replica import ReadReplica
from ._handle import Supervisor
from ._middleware import LitestreamLifespan
from ._registry import get_supervisor, start_litestream, status, stop_litestream
from ._release import PACKAGE_VERSION as __version__
from ._restore.points import RestorePoint, list_restore_points, restore_to
from ._restore.verify import Verification
from ._starlette import durable, durable_endpoint, position_header, read_your_writes
from ._state import State

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
