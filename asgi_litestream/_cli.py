"""The ``asgi-litestream`` command: the library's jobs for build steps, init containers, probes.

    asgi-litestream download   fetch and verify the pinned binary; print its path
    asgi-litestream config     print the Litestream YAML the middleware would generate
    asgi-litestream restore    restore every configured database from its replica
    asgi-litestream status URL read a running app's status route (exit 0 = running)

``config`` and ``restore`` take the middleware's settings: flags win over the
``ASGI_LITESTREAM_*`` environment variables, exactly as keyword options do.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx

from . import __version__
from ._binary import find_litestream
from ._config import Settings
from ._download import DEFAULT_VERSION, download_litestream
from ._exceptions import LitestreamError, RestoreError
from ._logs import scrub
from ._options import OPTIONS
from ._restore import restore_database
from ._workdir import private_workdir, write_config

__all__ = ["main"]

PROG = "asgi-litestream"
logger = logging.getLogger("asgi_litestream")

# `status` exit codes, for use as an exec probe.
_RUNNING, _DOWN, _UNREACHABLE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    with _log_to_stderr(logging.WARNING if args.quiet else logging.INFO):
        try:
            code: int = args.run(args)
        except LitestreamError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)  # noqa: T201
            return 1
        except KeyboardInterrupt:
            return 130
    return code


# -- download ------------------------------------------------------------------


def _download(args: argparse.Namespace) -> int:
    path = download_litestream(
        version=args.version,
        # _binary reads ASGI_LITESTREAM_CACHE_DIR itself; the URL variable belongs to Settings.
        download_url=args.download_url or os.environ.get("ASGI_LITESTREAM_DOWNLOAD_URL") or None,
        cache_dir=args.cache_dir,
        sha256=args.sha256,
    )
    print(path)  # noqa: T201
    return 0


# -- config --------------------------------------------------------------------


def _config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # The YAML holds ${VAR} references, not secrets; scrub anyway, since this output
    # ends up in terminals and CI logs.
    sys.stdout.write(scrub(settings.to_yaml(), settings.secrets()))
    return 0


# -- restore -------------------------------------------------------------------


def _restore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    existing = [db for db in settings.databases if db.path.exists()]
    if existing and not (args.force or args.if_db_not_exists):
        # Checked for all databases first, so that a refusal never leaves half of them restored.
        names = ", ".join(str(db.path) for db in existing)
        raise RestoreError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; refusing to overwrite. "
            "Fix: move it away, pass --force to replace it with the replica's copy, or "
            "--if-db-not-exists to keep it"
        )
    keep = [] if args.force or not args.if_db_not_exists else existing
    for db in keep:
        _say(f"kept {db.path}: it already exists")
    todo = [db for db in settings.databases if db not in keep]
    if not todo:
        return 0
    binary = find_litestream(
        settings.bin_path, download=settings.download, download_url=settings.download_url
    )
    workdir = private_workdir()
    try:
        config_path = write_config(settings, workdir)
        env = settings.child_env(os.environ)
        for db in todo:
            if restore_database(binary, config_path, db, env, overwrite=args.force,
                                timeout=settings.restore_timeout, secrets=settings.secrets()):
                _say(f"restored {db.path} from {db.replica}")
            elif db in existing:
                _say(f"no backup of {db.path} in {db.replica}: kept the existing database")
            else:
                _say(f"no backup of {db.path} in {db.replica}: it starts fresh")
    finally:
        workdir.remove()
    return 0


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201


# -- status --------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    try:
        response = httpx.get(args.url, timeout=args.timeout)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _unreachable(f"cannot reach {args.url}: {type(exc).__name__}: {exc}")
    # The route answers 503 with the same JSON when Litestream is down: judge the body.
    try:
        body = response.json()
    except ValueError:
        body = None
    if not _is_status(body):
        return _unreachable(
            f"{args.url} answered HTTP {response.status_code} without the status JSON. "
            "Fix: point at the app's status route (default /_litestream/status)"
        )
    if args.json:
        sys.stdout.write(response.text.rstrip("\n") + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in _describe(body)))
    return _RUNNING if body["status"] == "running" else _DOWN


def _unreachable(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)  # noqa: T201
    return _UNREACHABLE


def _is_status(body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return False
    databases = body.get("databases", [])
    return isinstance(databases, list) and all(isinstance(d, dict) for d in databases)


def _describe(body: dict[str, Any]) -> list[str]:
    status = f"{body['status']} (state: {_show(body.get('state'))})"
    lines = [
        _row("name", body.get("name")),
        _row("status", status),
        _row("healthy", body.get("healthy")),
    ]
    if "role" in body:  # several workers: one leads (runs Litestream), the others stand by
        lines.append(_row("role", f"{_show(body['role'])} (leader pid "
                                  f"{_show(body.get('leader_pid'))}, this worker "
                                  f"{_show(body.get('worker_pid'))})"))
    lines += [
        _row("pid", body.get("pid")),
        _row("uptime", None if body.get("uptime_s") is None else f"{body['uptime_s']} s"),
        _row("restarts", body.get("restarts")),
        _row("last exit code", body.get("last_exit_code")),
    ]
    for db in body.get("databases", []):
        position = (f"{_show(db.get('txid'))} (replicated {_show(db.get('replicated_txid'))}, "
                    f"lag {_show(db.get('lag'))})")
        lines += [
            _row("database", db.get("path")),
            _row("  replica", db.get("replica")),
            _row("  txid", position),
            _row("  healthy", db.get("healthy")),
        ]
        if db.get("error"):
            lines.append(_row("  error", db["error"]))
        lines += [_row("  last error", error) for error in db.get("last_errors") or []]
    errors = body.get("last_errors") or []
    if errors:
        lines.append("last errors:")
        lines += [f"  {error}" for error in errors]
    return lines


def _row(label: str, value: Any) -> str:
    return f"{label + ':':<17}{_show(value)}"


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# -- arguments -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run Litestream's jobs for an app that uses asgi-litestream."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    # Also accepted after the command; SUPPRESS keeps the subparser from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="log warnings and errors only")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    download = commands.add_parser(
        "download", parents=[common], help="fetch and verify the binary; print its path",
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
    download.set_defaults(run=_download)

    config = commands.add_parser(
        "config", parents=[common], help="print the Litestream config the app would use",
        description="Print the Litestream YAML generated from these settings (flags override "
        "ASGI_LITESTREAM_* variables). It holds no secret: passwords are ${VAR} references.",
    )
    _settings_flags(config)
    config.set_defaults(run=_config)

    restore = commands.add_parser(
        "restore", parents=[common], help="restore every database from its replica",
        description="Restore every configured database from its replica (for an init "
        "container). An empty replica is not an error: the database starts fresh. Never run "
        "it while Litestream replicates the database.",
    )
    _settings_flags(restore)
    existing = restore.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true",
                          help="replace databases that already exist")
    existing.add_argument("--if-db-not-exists", action="store_true",
                          help="keep databases that already exist and restore only the others")
    restore.set_defaults(run=_restore)

    status = commands.add_parser(
        "status", parents=[common], help="read a running app's status route",
        description="Read a running app's status route. Exit 0 when Litestream is running, "
        "1 when it is not, 2 when the URL cannot be reached or does not answer the status JSON.",
    )
    status.add_argument("url", help="e.g. http://127.0.0.1:8000/_litestream/status")
    status.add_argument("--timeout", type=float, default=5.0,
                        help="seconds (default %(default)s)")
    status.add_argument("--json", action="store_true", help="print the JSON as received")
    status.set_defaults(run=_status)
    return parser


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option that declares one (_options.py). Credentials are
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


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_options(**{option.name: getattr(args, option.name)
                                    for option in OPTIONS if option.flag is not None})


# -- logging -------------------------------------------------------------------


class _NoRestoreOutcome(logging.Filter):
    # `restore` prints each outcome on stdout; the library's own log line would repeat it.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "_restore" and record.levelno == logging.INFO)


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
