"""What ``--help`` says beyond the flags: each command's examples and exit statuses.

Declared once here: the parser prints them (each command's epilog, and the exit statuses
of all commands after the main help), docs/gen.py writes them into docs/cli.md, and the
commands return the codes named here.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass

# The exit statuses. A check (verify, status) answers with 0 or 1; when it cannot
# answer it exits 2, like a usage error: neither is an answer, so no probe mistakes
# "could not look" for "looked, and it is bad".
OK = 0
FAILED = 1
USAGE = 2  # argparse's own, for an unknown flag or a bad flag value
NO_ANSWER = 2
INTERRUPTED = 130

_INTERRUPTED = (INTERRUPTED, "interrupted (Ctrl+C)")
_USAGE = (USAGE, "usage error: an unknown flag, a missing command or a bad flag value")


@dataclass(frozen=True, slots=True)
class Manual:
    """The examples of one command (a shell comment, then the command line) and what
    each of its exit statuses means."""

    examples: tuple[tuple[str, str], ...]
    exits: tuple[tuple[int, str], ...]

    def epilog(self) -> str:
        lines = ["examples:"]
        for comment, command in self.examples:
            lines += [f"  # {comment}", f"  {command}"]
        return "\n".join([*lines, "", exit_table(self.exits)])


def exit_table(exits: tuple[tuple[int, str], ...]) -> str:
    """``exit status:`` and one indented row per code, wrapped to the terminal."""
    width = max(shutil.get_terminal_size().columns - 2, 40)
    rows = ["exit status:"]
    for code, meaning in exits:
        rows += textwrap.wrap(meaning, width, initial_indent=f"  {code:<5}",
                              subsequent_indent=" " * 7)
    return "\n".join(rows)


_STATUS_URL = "http://127.0.0.1:8000/_litestream/status"

MANUALS: dict[str, Manual] = {
    "download": Manual(
        examples=(
            ("the pinned release, into the cache; prints the executable's path",
             "asgi-litestream download"),
            ("in an image build step, into a cache the app's user can read",
             "ASGI_LITESTREAM_CACHE_DIR=/opt/litestream asgi-litestream download"),
        ),
        exits=((OK, "the executable is in the cache; its path is on stdout"),
               (FAILED, "no usable executable: the download or its check failed (stderr "
                "says why and the fix)"),
               _USAGE, _INTERRUPTED),
    ),
    "config": Manual(
        examples=(
            ("check settings given as flags",
             "asgi-litestream config --database app.db --replica-url s3://bucket/app"),
            ("or as the app gets them, from the environment",
             "ASGI_LITESTREAM_DATABASE=app.db "
             "ASGI_LITESTREAM_REPLICA_URL=file:///backups/app asgi-litestream config"),
        ),
        exits=((OK, "the settings are valid; the YAML is on stdout"),
               (FAILED, "a setting is invalid: stderr names the flag or the variable, the "
                "value and the fix"),
               _USAGE, _INTERRUPTED),
    ),
    "restore": Manual(
        examples=(
            ("in an init container: restore what is missing, keep what exists",
             "asgi-litestream restore --database /data/app.db --replica-url s3://bucket/app "
             "--if-db-not-exists"),
            ("rewind one database into a side file, to look before a mistake",
             "asgi-litestream restore --only app.db --timestamp 2026-11-30T14:03:00Z "
             "--output /tmp/app-before.db"),
            ("what was restored, as JSON (path, txid, bytes, seconds)",
             "asgi-litestream restore --if-db-not-exists --json"),
        ),
        exits=((OK, "each database was restored, kept (--if-db-not-exists), or has no "
                "backup and starts fresh (an empty replica is not an error)"),
               (FAILED, "refused (the database exists, an app runs it, --output exists) or "
                "failed (invalid settings, no binary, an unreadable replica, no such "
                "restore point); stderr says why and the fix, and no file is half "
                "restored"),
               _USAGE, _INTERRUPTED),
    ),
    "backups": Manual(
        examples=(
            ("the restore points of every configured database",
             "asgi-litestream backups --database /data/app.db --replica-url s3://bucket/app"),
            ("the last txid of one database, for a script",
             "asgi-litestream backups --only app.db --json "
             "| jq '.databases[0].restore_points[-1].txid'"),
        ),
        exits=((OK, "listed (a replica with no backup lists none)"),
               (FAILED, "invalid settings, no binary, or a replica that cannot be read; "
                "stderr says why and the fix"),
               _USAGE, _INTERRUPTED),
    ),
    "verify": Manual(
        examples=(
            ("from cron, with the app's ASGI_LITESTREAM_* settings: alert on non-zero",
             "asgi-litestream verify || echo 'the backup is not verified' >&2"),
            ("the result as JSON",
             "asgi-litestream verify --only app.db --json > verify.json"),
        ),
        exits=((OK, "every replica restores and passes SQLite's integrity check (and "
                "holds what the running app had)"),
               (FAILED, "a replica did not verify: its FAILED line says why"),
               (NO_ANSWER, "could not verify (invalid settings, no binary) or a usage "
                "error; stderr says why"),
               _INTERRUPTED),
    ),
    "status": Manual(
        examples=(
            ("a Kubernetes exec probe, or a look from a shell",
             f"asgi-litestream status {_STATUS_URL}"),
            ("the status as the route serves it, for a script",
             f"asgi-litestream status --json {_STATUS_URL} | jq .databases"),
        ),
        exits=((OK, "Litestream is running"),
               (FAILED, "Litestream is not running (stdout shows the state and its last "
                "errors)"),
               (NO_ANSWER, "no answer: the URL cannot be reached or does not answer the "
                "status JSON, or a usage error"),
               _INTERRUPTED),
    ),
}

# After the main help: every code, whichever the command.
EXITS: tuple[tuple[int, str], ...] = (
    (OK, "done; verify: every replica verified; status: Litestream is running"),
    (FAILED, "failed or refused, and stderr says why and the fix; verify: a replica did "
     "not verify; status: Litestream is not running"),
    (USAGE, "usage error (an unknown flag or a bad flag value); verify and status: could "
     "not check, so no answer"),
    _INTERRUPTED,
)


def paragraphs(text: str) -> str:
    """``text`` wrapped to the terminal, paragraph by paragraph (blank-line separated):
    the help keeps its own line breaks (the examples'), so the prose is wrapped here."""
    width = max(shutil.get_terminal_size().columns - 2, 40)
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width) for p in text.split("\n\n"))
