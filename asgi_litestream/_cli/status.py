"""`asgi-litestream status`: ask a running app's status route, say what it answers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from .commands import PROG
from .manual import FAILED, NO_ANSWER, OK

# -- status --------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
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
    return OK if body["status"] == "running" else FAILED


def _unreachable(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)  # noqa: T201
    return NO_ANSWER


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
