"""Litestream's output → Python logging, at the level Litestream gave each line."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
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


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``, also in escaped forms."""
    for form in _forms(tuple(secrets)):
        text = text.replace(form, "***")
    return text


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
