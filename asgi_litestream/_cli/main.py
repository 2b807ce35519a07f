"""The ``asgi-litestream`` command: the library's jobs for build steps, init containers, probes.

    asgi-litestream download   fetch and verify the pinned binary; print its path
    asgi-litestream config     print the Litestream YAML the middleware would generate
    asgi-litestream restore    restore every configured database from its replica, or one
                               to a point in time (--timestamp / --txid, --output FILE)
    asgi-litestream backups    list the restore points each replica holds
    asgi-litestream verify     prove each replica restores
    asgi-litestream status URL read a running app's status route

``config``, ``restore``, ``backups`` and ``verify`` take the middleware's settings: flags
win over the ``ASGI_LITESTREAM_*`` environment variables, exactly as keyword options do.
Each command's ``--help`` ends with examples and its exit statuses (_cli/manual.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .._config.options import OPTIONS
from .._exceptions import LitestreamError
from .._litestream.download import DEFAULT_VERSION
from .._release import PACKAGE_VERSION
from . import commands as _commands
from .commands import PROG
from .manual import EXITS, FAILED, INTERRUPTED, MANUALS, exit_table, paragraphs
from .status import run_status
from .words import Words, describe

__all__ = ["main"]

logger = logging.getLogger("asgi_litestream")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    with _log_to_stderr(logging.WARNING if args.quiet else logging.INFO):
        try:
            code: int = args.run(args)
        except LitestreamError as exc:
            print(f"{PROG}: error: {describe(exc, Words.of(args, os.environ))}",  # noqa: T201
                  file=sys.stderr)
            return FAILED
        except KeyboardInterrupt:
            return INTERRUPTED
    return code


# -- arguments -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run Litestream's jobs for an app that uses asgi-litestream.",
        epilog=f"{exit_table(EXITS)}\n\nEach command's --help shows examples, e.g. "
        f"{PROG} restore --help.", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {PACKAGE_VERSION}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    # Also accepted after the command; SUPPRESS keeps the subparser from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="log warnings and errors only")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    def command(name: str, *, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[common], help=summary, description=paragraphs(description),
            epilog=MANUALS[name].epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)

    download = command(
        "download", summary="fetch and verify the binary; print its path",
        description="Download the pinned Litestream release into the cache (for a build "
        "step) and print the executable's path. A cached binary needs no network.",
    )
    download.add_argument("--version", default=DEFAULT_VERSION,
                          help="release version (default %(default)s; any other needs --sha256, "
                          "and the app then needs ASGI_LITESTREAM_BIN_PATH set to the path)")
    download.add_argument("--download-url",
                          help="base URL of a mirror (default $ASGI_LITESTREAM_DOWNLOAD_URL, "
                          "else GitHub releases)")
    download.add_argument("--cache-dir", help="default $ASGI_LITESTREAM_CACHE_DIR, else "
                          "$XDG_CACHE_HOME/asgi-litestream")
    download.add_argument("--sha256", help="expected sha256 of the archive (for --version)")
    download.set_defaults(run=_commands.run_download)

    config = command(
        "config", summary="print the Litestream config the app would use",
        description="Print the Litestream YAML generated from these settings (flags override "
        "ASGI_LITESTREAM_* variables). It holds no secret: passwords are ${VAR} references.",
    )
    _settings_flags(config)
    config.set_defaults(run=_commands.run_config)

    restore = command(
        "restore", summary="restore every database from its replica",
        description="Restore every configured database from its replica (for an init "
        "container). An empty replica is not an error: the database starts fresh. With "
        "--timestamp or --txid, restore the state of that point instead (list them with "
        "`backups`), into --output FILE to inspect it beside the live database. Replacing an "
        "existing database (--force) is refused while an app runs it.",
    )
    _settings_flags(restore)
    existing = restore.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true",
                          help="replace databases that already exist (refused while an app "
                          "runs one)")
    existing.add_argument("--if-db-not-exists", action="store_true",
                          help="keep databases that already exist and restore only the others")
    point = restore.add_argument_group("point in time (default: the latest)")
    when = point.add_mutually_exclusive_group()
    when.add_argument("--timestamp", metavar="TIME",
                      help="the state as of TIME (RFC 3339, e.g. 2026-11-30T14:03:00Z): the "
                      "last restore point created before it")
    when.add_argument("--txid", type=_commands.parse_txid, metavar="TXID",
                      help="exactly restore point TXID (as `backups` lists it; one database)")
    point.add_argument("--output", metavar="FILE",
                       help="restore into FILE, which must not exist, instead of the database "
                       "itself (one database)")
    _only_flag(restore)
    _json_flag(restore, "per database what was done (restored, kept, no_backup), the txid, "
               "bytes and seconds; no progress line")
    restore.set_defaults(run=_commands.run_restore)

    backups = command(
        "backups", summary="list the restore points each replica holds",
        description="List, per database, the states its replica can restore: txid, when "
        "the replica got it, and the size of the change. Pick one for `restore --txid` or "
        "`restore --timestamp`.",
    )
    _settings_flags(backups)
    _json_flag(backups, "each database with its replica and its restore points")
    _only_flag(backups)
    backups.set_defaults(run=_commands.run_backups)

    check = command(
        "verify", summary="prove that each replica restores",
        description="Restore each replica into a private side file and check it with "
        "SQLite's integrity check; when the app runs, also that it holds every transaction "
        "the app had. Never touches the databases.",
    )
    _settings_flags(check)
    _only_flag(check)
    _json_flag(check, "ok, and per database the txid restored, the app's txid and why "
               "it failed")
    check.set_defaults(run=_commands.run_verify)

    status = command(
        "status", summary="read a running app's status route",
        description="Read a running app's status route; usable as an exec probe, since "
        "the exit status says whether Litestream is running.",
    )
    status.add_argument("url", help="e.g. http://127.0.0.1:8000/_litestream/status")
    status.add_argument("--timeout", type=float, default=5.0,
                        help="seconds (default %(default)s)")
    _json_flag(status, "the status as the route serves it")
    status.set_defaults(run=run_status)
    return parser


def _json_flag(parser: argparse.ArgumentParser, holding: str) -> None:
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON document on stdout: {holding}")


def _only_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", metavar="DATABASE",
                        help="only this configured database (its path or file name); unlike "
                        "--database, keeps the settings' replica URL for it")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option that declares one (_config/options.py). Credentials are
    deliberately not flags: a command line is visible to every user."""
    group = parser.add_argument_group("settings (default: the ASGI_LITESTREAM_* variables)")
    for option in OPTIONS:
        if option.flag is None:
            continue
        flag = "--" + option.name.replace("_", "-")
        if option.kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=option.flag)
        elif option.kind == "database":
            group.add_argument(flag, action="append", metavar="PATH", help=option.flag)
        else:
            group.add_argument(flag, metavar=_METAVARS[option.kind], help=option.flag,
                               type=float if option.kind == "seconds" else str)


_METAVARS = {"seconds": "SECONDS", "path": "PATH", "replica_url": "URL", "text": "URL",
             "str": "VALUE"}



# -- logging -------------------------------------------------------------------


class _NoRestoreOutcome(logging.Filter):
    # `restore` prints each outcome on stdout; the library's own log line would repeat it.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (Path(record.pathname).parent.name == "_restore"
                    and record.levelno == logging.INFO)


@contextlib.contextmanager
def _log_to_stderr(level: int) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    handler.addFilter(_NoRestoreOutcome())
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
