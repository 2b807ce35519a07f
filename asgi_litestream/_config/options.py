"""Every option, declared once: name, default, environment variable, how to read it.

The middleware's keywords, ``Settings``, the CLI's flags and the README's table are
all checked against (or built from) :data:`OPTIONS`, so they cannot drift apart.
``python -m asgi_litestream._config.options`` prints the README table.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import ConfigError
from .._release import DEFAULT_VERSION

ENV_PREFIX = "ASGI_LITESTREAM_"

Kind = Literal["database", "replica_url", "secret", "str", "text", "path", "bool", "int",
               "seconds", "route", "callable"]


class _Unset:
    def __repr__(self) -> str:
        return "DEFAULT"


# The default of a keyword where None already means something ("turn it off").
DEFAULT: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Option:
    """One option of LitestreamLifespan."""

    name: str
    kind: Kind
    default: Any  # None: unset (or required, or computed from others)
    shown_default: str  # the README's default column
    meaning: str
    env_note: str = ""  # after the variable's name in the README, e.g. " (comma-separated)"
    flag: str | None = None  # the CLI's help for --name, when the CLI takes it

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def read(self, value: Any, environ: Mapping[str, str]) -> Any:
        """The keyword ``value`` when given, else the environment's, else the default;
        parsed and type-checked (ConfigError names the option or the variable)."""
        if self.kind == "secret":
            return _secret(self.name, value, environ)
        if self.kind == "route":  # None turns it off, so "unset" is DEFAULT
            if value is not DEFAULT:
                return value
            text = environ.get(self.env)
            return self.default if text is None else (text or None)
        if self.kind == "callable":  # keyword only: code has no environment variable
            return _one_argument_callable(self.name, value)
        if value is None:
            text = environ.get(self.env)
            if text is None:
                return self.default
            try:
                value = _PARSE[self.kind](text)
            except ValueError as exc:
                raise ConfigError(self.env, text, str(exc),
                                  "fix or unset the environment variable") from None
        return self._check(value)

    def _check(self, value: Any) -> Any:
        if self.kind == "seconds":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(self.name, value, "must be a number of seconds",
                                  f"pass a number such as {self.default}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(self.name, value, "must be a positive, finite number of "
                                  "seconds", f"pass a number such as {self.default}")
            return float(value)
        kind = {"int": int, "bool": bool, "str": str}.get(self.kind)
        if kind is not None and (
            (kind is int and isinstance(value, bool)) or not isinstance(value, kind)
        ):
            raise ConfigError(self.name, value, f"must be a {kind.__name__}",
                              f"pass a {kind.__name__} such as {self.default!r}")
        return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


_PARSE: dict[str, Any] = {
    "database": lambda s: [p for p in s.split(",") if p.strip()],
    "replica_url": str, "str": str, "text": str, "path": str,
    "bool": parse_bool, "int": int, "seconds": float,
}


def _one_argument_callable(name: str, value: Any) -> Any:
    """``value`` when it is None or can be called with one argument (the request);
    sync or async alike: the routes await what it returns when that is awaitable."""
    if value is None:
        return None
    fix = ("pass a function of the request returning True to allow it, such as "
           "`lambda request: request.headers.get('x-ops') == 'yes'` (or an async def)")
    if not callable(value):
        raise ConfigError(name, value, "must be a callable", fix)
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin without a signature: it will tell
        return value
    try:
        signature.bind(object())
    except TypeError:
        raise ConfigError(name, value, f"must take one argument, the request; it takes "
                          f"{signature}", fix) from None
    return value


def _secret(name: str, value: Any, environ: Mapping[str, str]) -> str | None:
    if value is not None:
        if not isinstance(value, str):
            raise ConfigError(name, "***", "must be a string", "pass the value as a str")
        return value
    # Litestream reads these itself from the inherited environment; we only need the
    # values to scrub them from logs.
    variable = name.upper()
    return environ.get("LITESTREAM_" + variable) or environ.get("AWS_" + variable) or None


def _seconds(name: str, default: float, shown: str, meaning: str, flag: str | None = None
             ) -> Option:
    return Option(name, "seconds", default, shown, meaning, flag=flag)


OPTIONS: tuple[Option, ...] = (
    Option("database", "database", None, "required",
           "SQLite file path(s): `str`, `Path`, `sqlite:///rel.db`, `sqlite:////abs.db`, "
           "`sqlite+aiosqlite:///...`, a SQLAlchemy `Engine` / `AsyncEngine` / `URL`, "
           "`\"django:default\"` (a `settings.DATABASES` alias), a folder of databases "
           "`\"/data/tenants/*.db\"` (see [Many databases](#many-databases)), or a list. "
           "The folder must exist; the file may not yet.", env_note=" (comma-separated)",
           flag="SQLite file or sqlite:/// URL; repeat for several"),
    Option("replica_url", "replica_url", None, "required",
           "Where to replicate: any URL Litestream accepts (`s3://`, `file:///abs/path`, "
           "`gs://`, `abs://`, `sftp://user:pass@host/path`, `webdav(s)://`, `nats://`, "
           "`oss://`). Or a mapping `{database: url}` (then `database` is left out).",
           flag="s3://bucket/app, file:///abs, ..."),
    Option("config_path", "path", None, "unset",
           "Run from an existing `litestream.yml`: its databases and replicas (with its "
           "`$VAR` references), our supervision on top. Not with `database` / "
           "`replica_url`. See [Using your app's database object]"
           "(#using-your-apps-database-object).", flag="an existing litestream.yml"),
    Option("access_key_id", "secret", None, "unset",
           "S3 credentials. Given only to the child process's environment."),
    Option("secret_access_key", "secret", None, "unset", "Likewise."),
    Option("access_key_id_file", "path", None, "unset",
           "Or: a file holding the key id (a mounted Docker or Kubernetes secret), read at "
           "startup and watched while the app runs: new keys restart Litestream with them. "
           "With `secret_access_key_file`. See [Rotating credentials]"
           "(#rotating-credentials)."),
    Option("secret_access_key_file", "path", None, "unset",
           "The file holding the secret key (likewise)."),
    Option("name", "str", "litestream", '`"litestream"`',
           "Name for `start_litestream` / `status` / `stop_litestream`; unique per process."),
    Option("bin_path", "path", None, "unset",
           "Use this executable; skips the search and the download.",
           flag="the litestream executable"),
    Option("download", "bool", True, "`True`",
           "Allow downloading the pinned release when no binary is installed.",
           env_note=" (`1`/`0`)",
           flag="allow downloading the binary when none is installed"),
    Option("download_url", "text", None, "GitHub releases",
           "Base URL of a mirror of the release assets.", flag="base URL of a release mirror"),
    Option("litestream_version", "str", DEFAULT_VERSION, f'`"{DEFAULT_VERSION}"`',
           "The release to download (only used for the download; an installed binary is "
           "used as it is)."),
    Option("litestream_sha256", "text", None, "pinned",
           "The archive's sha256, required for a version the library has no pin for."),
    Option("status_path", "route", "/_litestream/status", '`"/_litestream/status"`',
           "The status route; `None` turns it off.", env_note=" (empty = off)"),
    Option("metrics_path", "route", "/_litestream/metrics", '`"/_litestream/metrics"`',
           "Prometheus metrics (ours and Litestream's); `None` turns it off. See "
           "[Metrics](#metrics).", env_note=" (empty = off)"),
    Option("dashboard_path", "route", None, "off",
           "A status page for people; needs an authorization (`dashboard_user` + "
           "`dashboard_password`, `status_token` or `dashboard_auth`). See "
           "[Status page](#status-page).",
           env_note=" (empty = off)"),
    Option("dashboard_user", "text", None, "unset",
           "HTTP Basic user who may see the status details, the metrics and the page. See "
           "[Who sees what](#who-sees-what)."),
    Option("dashboard_password", "text", None, "unset",
           "Its password (never logged, never shown)."),
    Option("dashboard_auth", "callable", None, "unset",
           "Or: a function of the Starlette `Request` (plain or `async`, run on the event "
           "loop) that allows it only by returning `True`. It runs before the app's "
           "middleware: read headers or cookies, not `request.user`.",
           env_note=" (keyword only)"),
    _seconds("sync_interval", 1.0, "`1.0` s",
             "How often Litestream ships changes (Litestream's `sync-interval`).",
             flag="how often Litestream ships changes"),
    _seconds("startup_timeout", 15.0, "`15` s",
             "Litestream must be ready within this, or startup fails."),
    _seconds("flush_timeout", 10.0, "`10` s",
             "Per database: how long the final flush may wait for the replica."),
    _seconds("stop_timeout", 5.0, "`5` s", "After `SIGTERM`, wait this long, then `SIGKILL`.",
             flag="after SIGTERM, wait this long, then SIGKILL"),
    Option("max_restarts", "int", 5, "`5`",
           "More exits than this within `restart_window` → stay down (state `failed`)."),
    _seconds("restart_window", 60.0, "`60` s",
             "The window for `max_restarts` (OTP's `max_seconds`)."),
    _seconds("max_backoff", 30.0, "`30` s", "Cap of the backoff between restarts."),
    Option("log_level", "str", "info", '`"info"`',
           "Litestream's own log level: `debug`, `info`, `warn`, `error`.",
           flag="debug, info, warn or error"),
    _seconds("health_interval", 2.0, "`2` s",
             "How often the background poller refreshes replication positions."),
    Option("max_lag", "seconds", None,
           "`max(10 × sync_interval, 3 × health_interval, 10 s)`",  # noqa: RUF001
           "A database is unhealthy once its replication delay (`behind_s`: the "
           "seconds since Litestream last confirmed the replica held everything) exceeds "
           "this; on a follower, once its copy is this far behind."),
    Option("strict_status", "bool", False, "`False`",
           "Status route answers 503 unless *healthy* (not just running). See "
           "[Health](#health-readiness-versus-alerting)."),
    Option("restore_if_missing", "bool", True, "`True`",
           "Restore a missing database from its replica before the app starts."),
    _seconds("restore_timeout", 300.0, "`300` s",
             "Bound on that restore, retries included: past it, startup fails (never a "
             "fresh start over a replica that could not be read). See "
             "[Restore on boot](#restore-on-boot)."),
    Option("sqlite_pragmas", "bool", True, "`True`",
           "When `database=` is a SQLAlchemy engine: give its connections `busy_timeout = "
           "5000` and `synchronous = NORMAL`. See [Using your app's database object]"
           "(#using-your-apps-database-object)."),
    Option("role", "str", "primary", '`"primary"`',
           "`\"follower\"`: never replicate; keep a read-only copy of each database that "
           "follows the primary's replica. See [Read replicas](#read-replicas)."),
    Option("lease", "bool", False, "`False`",
           "Hold a lease in the replica (`lock.json`, upstream's format) while replicating: "
           "one writer across hosts. See [Rolling deploys across hosts]"
           "(#rolling-deploys-across-hosts).", env_note=" (`1`/`0`)"),
    _seconds("lease_ttl", 30.0, "`30` s",
             "The lease's time to live: renewed every third of it; a holder that cannot "
             "renew stops replicating before it expires."),
    Option("verify_interval", "seconds", None, "off",
           "Verify the backup this often in the background (the leading worker restores "
           "the replica into a side file and checks it); the result is in the status. See "
           "[Verify](#verify-prove-that-the-backup-restores)."),
    Option("if_behind", "str", "restore", '`"restore"`',
           "A database file here that is behind its replica (or diverged from it) at "
           "start: `\"restore\"` moves it aside (`<db>.behind-<time>`) and restores the "
           "replica's; `\"fail\"` refuses to start instead. Never replicated over the "
           "replica. See [Restore on boot](#restore-on-boot).",
           flag="restore or fail: what to do with a file behind its replica"),
    Option("keep_behind", "int", 3, "`3`",
           "How many set-aside `.behind-*` copies to keep per database (the oldest go)."),
    Option("public_details", "bool", False, "`False`",
           "Let anonymous requests see the status details and the metrics (only for "
           "routes on a private port); the page still needs its authorization. See "
           "[Who sees what](#who-sees-what)."),
    Option("status_token", "text", None, "unset",
           "A bearer token (`Authorization: Bearer ...`, what Prometheus scrapes with) "
           "that may see the status details, the metrics and the page; never logged, "
           "never shown."),
)
OPTION_NAMES = tuple(option.name for option in OPTIONS)


def readme_table() -> str:
    """The README's options table, built from OPTIONS."""
    rows = ["| keyword | environment variable | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        env = (f"`LITESTREAM_{option.name.upper()}`, `AWS_{option.name.upper()}`"
               if option.kind == "secret" else f"`{option.env}`{option.env_note}")
        rows.append(f"| `{option.name}` | {env} | {option.shown_default} | {option.meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())  # noqa: T201
