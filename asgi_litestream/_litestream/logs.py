"""Litestream's output → Python logging, at the level Litestream gave each line: the one
reader of its log lines (JSON or slog text)."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("asgi_litestream")

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR}


# One key=value of Go's slog text format (values with spaces are Go-quoted).
_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_record(text: str) -> dict[str, Any] | None:
    """One line of Litestream's slog output as a record: JSON (``logging: {type: json}``,
    as our generated config asks), or text (``time=… level=INFO msg="…" k=v``, as
    `restore` writes it; every value a string). Litestream repeats keys (a compaction
    "level" after the log level): the first of each wins. None for anything else
    (``Error: …`` on exit, a panic)."""
    if text.startswith("{"):
        try:
            record = json.loads(text, object_pairs_hook=_first_wins)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    if not text.startswith("time="):
        return None
    found: dict[str, Any] = {}
    for key, value in _FIELD.findall(text):
        if value.startswith('"'):
            try:
                value = str(json.loads(value))
            except ValueError:
                value = value[1:-1]
        found.setdefault(key, value)
    return found


def describe(record: dict[str, Any]) -> tuple[int, str, str | None]:
    """A record → (logging level, "msg key=value ...", database name or None)."""
    fields = dict(record)
    level = _LEVELS.get(str(fields.pop("level", "")).upper(), logging.INFO)
    fields.pop("time", None)
    message = str(fields.pop("msg", ""))
    database = fields.get("db")
    shown = " ".join(f"{k}={_field(v)}" for k, v in fields.items())
    return level, f"{message} {shown}".strip(), database if isinstance(database, str) else None


def parse_log_line(text: str) -> tuple[int, str, str | None]:
    """A log line → (logging level, "msg key=value ...", database name or None)."""
    record = parse_record(text)
    if record is not None:
        return describe(record)
    # Start-up failures ("Error: ...") and Go panics are plain text on stderr.
    if text.lower().startswith(("error", "panic", "fatal")):
        return logging.ERROR, text, None
    return logging.INFO, text, None


# Databases whose last warnings are kept: a folder's come and go, and a name Litestream
# warned about once must not stay in memory for good.
MAX_DATABASES = 1000
_LINES_PER_DATABASE = 5


class LitestreamLog:
    """Where Litestream's output goes: each line re-emitted on our logger at its own
    level, scrubbed of secrets; warning and error lines also kept for the status (the
    last few per database, for the :data:`MAX_DATABASES` that warned last)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(secrets)
        self.last_errors: deque[str] = deque(maxlen=10)
        self._by_database: OrderedDict[str, deque[str]] = OrderedDict()
        self.changes = 0  # bumped with every kept line
        self._watchers: list[Callable[[str, int], None]] = []

    def watch(self, on_warning: Callable[[str, int], None]) -> None:
        """Call ``on_warning(line, pid)`` with every warning or error line from now on
        (scrubbed), and the pid of the process that wrote it."""
        self._watchers.append(on_warning)

    def add_secrets(self, secrets: Sequence[str]) -> None:
        """Scrub these too from now on (keys rotated in while the app runs)."""
        self._secrets = tuple(dict.fromkeys((*self._secrets, *secrets)))

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret scrubbed now, rotated-in keys included (for other output)."""
        return self._secrets

    def line(self, raw: bytes, pid: int) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if text:
            self._emit(*parse_log_line(scrub(text, self._secrets)), pid)

    def record(self, record: dict[str, Any], pid: int) -> None:
        """Log a line already read with :func:`parse_record` (the follower acts on it)."""
        self._emit(*describe(record), pid)

    def _emit(self, level: int, message: str, database: str | None, pid: int) -> None:
        message = scrub(message, self._secrets)
        logger.log(level, "litestream[%d]: %s", pid, message, extra=_CHILD_LINE)
        if level >= logging.WARNING:
            self.changes += 1
            self.last_errors.append(message)
            for on_warning in self._watchers:
                on_warning(message, pid)
            if database is not None:
                kept = self._by_database.pop(database, None) or deque(
                    maxlen=_LINES_PER_DATABASE)
                kept.append(message)
                self._by_database[database] = kept  # the most recent last
                while len(self._by_database) > MAX_DATABASES:
                    self._by_database.popitem(last=False)

    def errors_of(self, database_name: str) -> list[str]:
        """The last warning/error lines Litestream logged about one database file."""
        return list(self._by_database.get(database_name, ()))

    def forget(self, database_name: str) -> None:
        """Drop what was kept about a database that is gone (removed from its folder)."""
        self._by_database.pop(database_name, None)

    def tail(self) -> str:
        """``": <last error line>"``, or nothing: for messages about an exit."""
        return f": {self.last_errors[-1]}" if self.last_errors else ""


# Marks Litestream's own lines: under a bare server only their warnings are shown.
_CHILD_LINE = {"litestream_line": True}
# Loggers that servers configure for themselves, in the order we look for one.
_SERVER_LOGGERS = ("uvicorn.error", "uvicorn", "hypercorn.error", "_granian", "gunicorn.error")


def show_lifecycle() -> None:
    """Make our lifecycle lines visible when nobody configured logging.

    Under a plain ``uvicorn app:app`` the root logger has no handler, so INFO lines
    (started, restored, final flush...) would vanish and warnings come out bare. Then,
    and only then, ride on the server's own logger: our records go to its handlers,
    in its format. Checked again at every record, so that an app which configures
    logging later gets each line once, from its own handlers, never twice.
    """
    if logger.handlers or logging.root.handlers:
        return  # the app configured logging (ours, or the root's): theirs to show
    server = next((found for name in _SERVER_LOGGERS
                   if (found := logging.getLogger(name)).handlers), None)
    forward = _ToServer(server)
    logger.addHandler(forward)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
        forward.set_level = True


class _ToServer(logging.Handler):
    """Hands our records to the server logger's handlers (or to stderr), as long as
    the app has configured no logging of its own."""

    def __init__(self, server: logging.Logger | None) -> None:
        super().__init__()
        self.set_level = False
        self.retired = False
        self._handlers: list[logging.Handler] = list(server.handlers) if server else [
            _stderr_handler()]

    def emit(self, record: logging.LogRecord) -> None:
        if self.retired or logging.root.handlers or any(
            h is not self for h in logger.handlers
        ):
            # The app configured logging since: step aside for good. (Not removed from
            # the logger here: that would make logging skip the next handler now.)
            if not self.retired and self.set_level:
                logger.setLevel(logging.NOTSET)
            self.retired = True
            return
        if getattr(record, "litestream_line", False) and record.levelno < logging.WARNING:
            return  # Litestream's own chatter; its warnings and errors do show
        for handler in self._handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s: %(message)s"))
    return handler


# What the AWS SDK prints of credentials in Litestream's request dumps
# (LITESTREAM_S3_DEBUG), values the library never held and cannot scrub by value: the
# session token of a web identity's or a container's keys (a header, or a presigned
# URL's parameter), the web identity token traded for them and the instance metadata
# token; STS's answer (XML); the instance metadata's and SSO's answers (JSON, maybe
# escaped once inside a JSON log line).
_SDK_SECRETS = re.compile(
    r"(?i)(x-amz-security-token(?::[ \t]*|=)|x-aws-ec2-metadata-token:[ \t]*"
    r"|webidentitytoken=)[^\s&\"]+"
    r"|(<(?:secretaccesskey|sessiontoken)>)[^<]*"
    r'|(\\?"(?:secretaccesskey|token|sessiontoken|accesstoken)\\?"\s*:\s*\\?")[^"\\]*')


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``, also in escaped forms, and the
    credentials an AWS SDK's request dump shows."""
    for form in _forms(tuple(secrets)):
        text = text.replace(form, "***")
    return _SDK_SECRETS.sub(lambda found: (found[1] or found[2] or found[3]) + "***", text)


@functools.lru_cache(maxsize=16)
def _forms(secrets: tuple[str, ...]) -> list[str]:
    """Each secret as it may appear in Litestream's output: raw, and escaped once or
    twice (Go quotes URLs with %q inside JSON strings, so a quote or a backslash in a
    password comes out escaped). Longest first, so that a secret containing another
    is replaced whole. Cached: the log pump scrubs every line with the same secrets."""
    forms: set[str] = set()
    for secret in secrets:
        once = json.dumps(secret)[1:-1]
        forms.update((secret, once, json.dumps(once)[1:-1]))
    return sorted(forms, key=len, reverse=True)


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        record.setdefault(key, value)
    return record


def _field(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text) if " " in text else text
