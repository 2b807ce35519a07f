"""The errors asgi-litestream raises.

Every error says what was wrong and how to fix it::

    LitestreamError
    ├── ConfigError            an option is invalid (raised before anything is spawned)
    ├── BinaryError            no usable litestream executable
    │   ├── BinaryNotFoundError        every place looked, and why each failed
    │   ├── UnsupportedPlatformError   no release asset for this OS / CPU
    │   └── DownloadError              the download failed
    │       └── ChecksumMismatchError  the archive's sha256 is not the pinned one
    ├── StartupError           Litestream did not become ready (carries its own error line)
    ├── RestoreError           restoring a database from its replica failed
    ├── SupervisorLookupError  no supervisor registered under that name
    └── SyncError              a flush / durable wait did not reach the replica in time
"""

from __future__ import annotations


class LitestreamError(Exception):
    """Base class of every error raised by asgi-litestream."""


class ConfigError(LitestreamError, ValueError):
    """An option is invalid. The message names the option, the value and the fix.

    The parts are kept as attributes too, so that an interface can say them in its own
    words (the command line: ``--database app.db`` rather than ``database='app.db'``).
    """

    def __init__(self, option: str, value: object, problem: str, fix: str) -> None:
        self.option = option
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{option}={value!r}: {problem}. Fix: {fix}")


class BinaryError(LitestreamError):
    """No usable litestream executable could be found or fetched."""


class BinaryNotFoundError(BinaryError, FileNotFoundError):
    """Every place that was looked in, and what was wrong with each."""


class UnsupportedPlatformError(BinaryError):
    """Litestream publishes no release asset for this operating system or CPU."""


class DownloadError(BinaryError):
    """Downloading the Litestream release archive failed."""


class ChecksumMismatchError(DownloadError):
    """The downloaded archive does not have the pinned sha256; it was deleted."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}. "
            "The archive was deleted. Fix: check the mirror (download_url) serves the "
            "official release, or pass the right sha256 for a custom version."
        )


class StartupError(LitestreamError):
    """Litestream exited or did not become ready during startup."""


class RestoreError(LitestreamError):
    """Restoring a database from its replica failed."""


class SupervisorLookupError(LitestreamError, LookupError):
    """No LitestreamLifespan is running under the given name."""


class SyncError(LitestreamError):
    """A sync did not reach the replica (Litestream down, replica unreachable, timeout)."""
