"""S3 keys read from files, as Docker and Kubernetes mount secrets.

``access_key_id_file`` / ``secret_access_key_file`` name two files; each holds one key,
maybe followed by one newline. They are read at startup (a missing, unreadable or empty
file stops it, naming the file and the fix) and, while the app runs, again and again by
:func:`watch_key_files` (a primary's and a read replica's alike), which never raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from .._exceptions import ConfigError, StartupError

logger = logging.getLogger("asgi_litestream")

FILE_OPTIONS = {"access_key_id": "access_key_id_file",
                "secret_access_key": "secret_access_key_file"}
# Where Litestream reads the keys (its child's environment only, never its config file).
KEY_VARIABLES = ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY")
SESSION_TOKEN = "AWS_SESSION_TOKEN"  # temporary keys' third part (both SDKs read it)
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


def check_keys(access_key_id: object, secret_access_key: object,
               session_token: object = None) -> dict[str, str | None]:
    """The environment's new values for the keys handed to a rotation (None: remove the
    variable); ConfigError for a key that is not a non-empty string (never showing a
    secret). Without a ``session_token`` AWS_SESSION_TOKEN is removed: an old
    session's token sent with new keys would have the storage refuse them."""
    for option, value in (("access_key_id", access_key_id),
                          ("secret_access_key", secret_access_key),
                          ("session_token", session_token)):
        if option == "session_token" and value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(option, value if option == "access_key_id" else "***",
                              "must be a non-empty string", "pass the new key")
    return {KEY_VARIABLES[0]: str(access_key_id), KEY_VARIABLES[1]: str(secret_access_key),
            SESSION_TOKEN: None if session_token is None else str(session_token)}


def use_variables(env: dict[str, str], variables: Mapping[str, str | None]) -> None:
    """Set ``variables`` in ``env``; one that is None is removed."""
    for name, value in variables.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


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


Keys = tuple[str, str]  # (access key id, secret access key)


class KeyFileWatch:
    """What one look at the two key files calls for: the keys to rotate to once both
    are readable, non-empty and new. Kubernetes swaps a Secret's files at once (a
    symbolic link), but other writers may not: a change to one only waits one more
    look, in case the other is on its way; an empty or unreadable file is logged (once
    per problem, not at every look) and not applied."""

    def __init__(self, paths: tuple[Path, Path], *, name: str) -> None:
        self.paths = paths
        self._name = name
        self._pending: Keys | None = None
        self._complaint = ""

    def look(self, applied: tuple[str | None, str | None]) -> Keys | None:
        """Read both files: the keys to rotate to now, or None to keep ``applied``."""
        (key_id, why_id), (secret, why_secret) = map(read_key, self.paths)
        if key_id is None or secret is None:
            problem = (f"{self.paths[0]} {why_id}" if key_id is None
                       else f"{self.paths[1]} {why_secret}")
            if problem != self._complaint:
                logger.warning("litestream %r: key file %s; not applied: the keys in use "
                               "stay", self._name, problem)
            self._complaint = problem
            return None
        self._complaint, found = "", (key_id, secret)
        if found == applied:
            self._pending = None
            return None
        half = found[0] == applied[0] or found[1] == applied[1]
        if half and found != self._pending:
            self._pending = found  # the other file may be on its way: one more look
            logger.info("litestream %r: only one key file changed; applying it at the "
                        "next check unless the other changes too", self._name)
            return None
        self._pending = None
        return found


async def watch_key_files(
    paths: tuple[Path | None, Path | None], *, name: str, interval: float,
    read_at_startup: tuple[str | None, str | None],
    rotate: Callable[[str, str], Awaitable[object]], stopped: Callable[[], bool],
) -> None:
    """Look at the key files every ``interval`` s until ``stopped()``, and ``rotate``
    to their keys when :class:`KeyFileWatch` says so. What counts is a change of the
    files since their keys were last applied (at first, ``read_at_startup``), not a
    difference from the keys in use: keys a ``rotate_credentials`` call put in place
    stay until the files change. A failed rotation is logged and tried again at the
    next look."""
    if paths[0] is None or paths[1] is None:
        return
    watch = KeyFileWatch((paths[0], paths[1]), name=name)
    from_files = read_at_startup
    failed = ""  # the last failure, said once however often it is tried again
    while not stopped():
        await anyio.sleep(interval)
        found = watch.look(from_files)
        if found is None:
            continue
        try:
            await rotate(*found)
        except (ConfigError, StartupError) as exc:
            if str(exc) != failed:
                logger.error("litestream %r: rotation to the key files' keys failed "
                             "(tried again at every check): %s", name, exc)
            failed = str(exc)
        else:
            from_files, failed = found, ""
