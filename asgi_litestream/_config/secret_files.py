"""S3 keys read from files, as Docker and Kubernetes mount secrets.

``access_key_id_file`` / ``secret_access_key_file`` name two files; each holds one key,
maybe followed by one newline. They are read at startup (a missing, unreadable or empty
file stops it, naming the file and the fix) and, while the app runs, again and again by
the service's watcher (_primary/credentials.py), which reads them with :func:`read_key`
and never raises.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError

FILE_OPTIONS = {"access_key_id": "access_key_id_file",
                "secret_access_key": "secret_access_key_file"}
# Where the keys came from, as the status shows it.
SOURCES = ("option", "file", "environment", "default chain")


def read_key(path: Path) -> tuple[str | None, str]:
    """The key in ``path`` (one trailing newline stripped), or None and why not."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc.__class__.__name__})"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text.strip():
        return None, "is empty"
    return text, ""


def _path(option: str, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(option, value, "must be a file path",
                          "pass the path of the mounted secret file, or None")
    return Path(value).expanduser().absolute()


def keys_from_files(values: dict[str, Any], given: Mapping[str, Any],
                    environ: Mapping[str, str]) -> str:
    """Read the key files into ``values`` (the options being parsed: their paths become
    Paths, the keys they hold become ``access_key_id`` / ``secret_access_key``), and
    say where the keys come from (one of SOURCES)."""
    paths = {key: _path(option, values[option]) for key, option in FILE_OPTIONS.items()}
    for key, option in FILE_OPTIONS.items():
        values[option] = paths[key]
    if all(path is None for path in paths.values()):
        if given.get("access_key_id") is not None:
            return "option"
        return "environment" if values["access_key_id"] else "default chain"
    for key, option in FILE_OPTIONS.items():
        if paths[key] is None:
            other = next(o for o in FILE_OPTIONS.values() if o != option)
            raise ConfigError(option, None, f"is needed with {other}: the two keys rotate "
                              "together", f"set {option} too (ASGI_LITESTREAM_"
                              f"{option.upper()}), or neither")
        variable = "LITESTREAM_" + key.upper()
        if given.get(key) is not None or environ.get(variable):
            where = key if given.get(key) is not None else variable
            raise ConfigError(option, str(paths[key]), f"is given, and so is {where}",
                              f"keep one: drop {where}, or {option}")
    for (key, option), path in zip(FILE_OPTIONS.items(), filter(None, paths.values()),
                                        strict=True):
        text, why = read_key(path)
        if text is None:
            raise ConfigError(option, str(path), f"the file {why}",
                              "mount the secret there (one key, no other text), or fix "
                              f"ASGI_LITESTREAM_{option.upper()}")
        values[key] = text
    return "file"
