"""Litestream's log lines: levels, fields, and secrets scrubbed in every form."""

from __future__ import annotations

import json
import logging

from asgi_litestream._litestream.logs import parse_log_line, scrub


def test_json_line_keeps_its_level_and_fields() -> None:
    """The first "level" is the log level; later duplicates stay as fields."""
    line = ('{"time":"t","level":"WARN","msg":"compaction failed","db":"app.db",'
            '"level":2,"error":"boom boom"}')
    assert parse_log_line(line) == (
        logging.WARNING, 'compaction failed db=app.db error="boom boom"', "app.db")


def test_plain_error_lines_are_errors() -> None:
    """Start-up failures arrive as plain "Error: ..." text."""
    assert parse_log_line("Error: config file not found")[0] == logging.ERROR
    assert parse_log_line("something else")[0] == logging.INFO


def test_scrub_catches_escaped_secrets() -> None:
    """A secret with quotes or backslashes is caught raw, JSON-escaped and Go-quoted
    inside JSON."""
    secret = 'pa"ss\\word'
    go_quoted = json.dumps(f"sftp://u:{secret}@h")  # how Go's %q renders the URL
    line = json.dumps({"level": "ERROR", "msg": "x", "url": go_quoted})
    assert secret not in scrub(line, [secret])
    _, message, _ = parse_log_line(scrub(line, [secret]))
    assert "word" not in message
    assert scrub(f"raw {secret}", [secret]) == "raw ***"
