"""Litestream's output → Python logging, at the level Litestream gave each line."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def parse_log_line(text: str) -> tuple[int, str, str | None]:
    """A JSON log line → (logging level, "msg key=value ...", database name or None)."""
    if text.startswith("{"):
        try:
            # Litestream repeats keys (a compaction "level" after the log level):
            # keep the first of each.
            record = json.loads(text, object_pairs_hook=_first_wins)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = _LEVELS.get(str(record.pop("level", "")).upper(), logging.INFO)
            record.pop("time", None)
            message = str(record.pop("msg", ""))
            database = record.get("db")
            fields = " ".join(f"{k}={_field(v)}" for k, v in record.items())
            return level, f"{message} {fields}".strip(), (
                database if isinstance(database, str) else None)
    # Start-up failures ("Error: ...") and Go panics are plain text on stderr.
    if text.lower().startswith(("error", "panic", "fatal")):
        return logging.ERROR, text, None
    return logging.INFO, text, None


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``, also in escaped forms: Go
    quotes URLs with %q inside JSON strings, so a password holding a quote or a
    backslash appears escaped once or twice."""
    for secret in secrets:
        once = json.dumps(secret)[1:-1]
        for form in {secret, once, json.dumps(once)[1:-1]}:
            text = text.replace(form, "***")
    return text


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
