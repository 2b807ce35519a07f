"""Keep a SQLite database continuously backed up by running Litestream beside an ASGI app.

The public names are imported when first used (module ``__getattr__``, PEP 562), so that
``import asgi_litestream`` costs next to nothing and an app pays only for what it uses:
the middleware's core when it adds ``LitestreamLifespan``, the read replica, restore
points or verify only when it touches them.
"""


import importlib as _importlib
import typing as _typing

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
from ._release import PACKAGE_VERSION as __version__

if _typing.TYPE_CHECKING:  # what the names below resolve to, for type checkers and IDEs
    from ._config.databases import Database
    from ._config.settings import Settings
    from ._follower.copy import connect_readonly
    from ._follower.replica import ReadReplica
    from ._handle import Supervisor
    from ._middleware import LitestreamLifespan
    from ._registry import (
        get_supervisor,
        rotate_credentials,
        start_litestream,
        status,
        stop_litestream,
    )
    from ._restore.points import RestorePoint, list_restore_points, restore_to
    from ._restore.verify import Verification
    from ._starlette import durable, durable_endpoint, position_header, read_your_writes
    from ._state import State

# public name -> the private module that defines it
_LAZY = {
    "Database": "._config.databases",
    "LitestreamLifespan": "._middleware",
    "ReadReplica": "._follower.replica",
    "RestorePoint": "._restore.points",
    "Settings": "._config.settings",
    "State": "._state",
    "Supervisor": "._handle",
    "Verification": "._restore.verify",
    "connect_readonly": "._follower.copy",
    "durable": "._starlette",
    "durable_endpoint": "._starlette",
    "get_supervisor": "._registry",
    "list_restore_points": "._restore.points",
    "position_header": "._starlette",
    "read_your_writes": "._starlette",
    "restore_to": "._restore.points",
    "rotate_credentials": "._registry",
    "start_litestream": "._registry",
    "status": "._registry",
    "stop_litestream": "._registry",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asgi_litestream' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # found once; the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "rotate_credentials",
    "start_litestream",
    "status",
    "stop_litestream",
]
