"""Settings: parse and validate every option before anything is spawned.

Each option can be given as a keyword argument or, when it is not, through an
``ASGI_LITESTREAM_*`` environment variable; otherwise its default applies. The
result is a frozen :class:`Settings`, the only input of the config writer and of
the supervisor.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import yaml

from ._exceptions import ConfigError

ENV_PREFIX = "ASGI_LITESTREAM_"

# Schemes Litestream 0.5 accepts for a replica URL.
REPLICA_SCHEMES = ("abs", "file", "gs", "nats", "oss", "s3", "sftp", "webdav", "webdavs")
LOG_LEVELS = ("debug", "info", "warn", "error")
# Query parameters whose values are secrets in some replica URL (abs, sftp, webdav...).
_SECRET_QUERY = re.compile(r"key|secret|password|token|sas|credential", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


class _Default:
    """The default of an option where None already means 'off' (status_path)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()




def resolve_status_path(status_path: str | _Default | None,
                        environ: Mapping[str, str]) -> str | None:
    """The keyword when given (None: off), else ASGI_LITESTREAM_STATUS_PATH (empty:
    off), else the default. Unvalidated: Settings checks it."""
    if not isinstance(status_path, _Default):
        return status_path
    text = environ.get(ENV_PREFIX + "STATUS_PATH")
    if text is None:
        return "/_litestream/status"
    return text or None



@dataclass(frozen=True, slots=True, kw_only=True)
class Database:
    """One SQLite database and where Litestream replicates it."""

    path: Path
    # The URL as given; may hold a password in its userinfo, hence no repr.
    replica_url: str = field(repr=False)

    @property
    def replica(self) -> str:
        """The replica location with every credential replaced by ``***``."""
        return redact_url(self.replica_url)

    def __repr__(self) -> str:
        return f"Database(path={str(self.path)!r}, replica={self.replica!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Validated options of one LitestreamLifespan. Build it with :meth:`from_options`."""

    databases: tuple[Database, ...]
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    name: str = "litestream"
    bin_path: Path | None = None
    download: bool = True
    download_url: str | None = None
    litestream_version: str = "0.5.17"
    litestream_sha256: str | None = field(default=None, repr=False)
    status_path: str | None = "/_litestream/status"
    sync_interval: float = 1.0
    startup_timeout: float = 15.0
    flush_timeout: float = 10.0
    stop_timeout: float = 5.0
    max_restarts: int = 5
    restart_window: float = 60.0
    max_backoff: float = 30.0
    log_level: str = "info"
    health_interval: float = 2.0
    max_lag: float = 10.0
    strict_status: bool = False
    restore_if_missing: bool = True
    restore_timeout: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``ASGI_LITESTREAM_*`` variables alone (for containers)."""
        return cls.from_options(environ=environ)

    @classmethod
    def from_options(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        database: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
        replica_url: str | Mapping[str | os.PathLike[str], str] | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        name: str | None = None,
        bin_path: str | os.PathLike[str] | None = None,
        download: bool | None = None,
        download_url: str | None = None,
        litestream_version: str | None = None,
        litestream_sha256: str | None = None,
        status_path: str | _Default | None = DEFAULT,
        sync_interval: float | None = None,
        startup_timeout: float | None = None,
        flush_timeout: float | None = None,
        stop_timeout: float | None = None,
        max_restarts: int | None = None,
        restart_window: float | None = None,
        max_backoff: float | None = None,
        log_level: str | None = None,
        health_interval: float | None = None,
        max_lag: float | None = None,
        strict_status: bool | None = None,
        restore_if_missing: bool | None = None,
        restore_timeout: float | None = None,
    ) -> Settings:
        """Validate keyword options, falling back to the environment, then defaults."""
        env = os.environ if environ is None else environ
        opt = _Options(env)
        databases = _databases(
            opt.raw("database", database, lambda s: [p for p in s.split(",") if p.strip()]),
            opt.raw("replica_url", replica_url, str),
        )
        status = resolve_status_path(status_path, env)
        sync = opt.seconds("sync_interval", sync_interval, 1.0)
        health = opt.seconds("health_interval", health_interval, 2.0)
        # A replica may trail by a few sync intervals before that means trouble.
        default_lag = max(10 * sync, 3 * health, 10.0)
        return cls(
            databases=databases,
            access_key_id=opt.secret("access_key_id", access_key_id, "ACCESS_KEY_ID"),
            secret_access_key=opt.secret(
                "secret_access_key", secret_access_key, "SECRET_ACCESS_KEY"
            ),
            name=opt.get("name", name, str, "litestream"),
            bin_path=_bin_path(opt.raw("bin_path", bin_path, str)),
            download=opt.get("download", download, _parse_bool, True),
            download_url=opt.raw("download_url", download_url, str),
            litestream_version=opt.get("litestream_version", litestream_version, str, "0.5.17"),
            litestream_sha256=opt.raw("litestream_sha256", litestream_sha256, str),
            status_path=_status_path(status),
            sync_interval=sync,
            startup_timeout=opt.seconds("startup_timeout", startup_timeout, 15.0),
            flush_timeout=opt.seconds("flush_timeout", flush_timeout, 10.0),
            stop_timeout=opt.seconds("stop_timeout", stop_timeout, 5.0),
            max_restarts=opt.get("max_restarts", max_restarts, int, 5),
            restart_window=opt.seconds("restart_window", restart_window, 60.0),
            max_backoff=opt.seconds("max_backoff", max_backoff, 30.0),
            log_level=opt.get("log_level", log_level, str, "info").lower(),
            health_interval=health,
            max_lag=opt.seconds("max_lag", max_lag, default_lag),
            strict_status=opt.get("strict_status", strict_status, _parse_bool, False),
            restore_if_missing=opt.get("restore_if_missing", restore_if_missing, _parse_bool,
                                       True),
            restore_timeout=opt.seconds("restore_timeout", restore_timeout, 600.0),
        )

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                "name", self.name, "must be 1-64 letters, digits, '_', '.' or '-'",
                "use a short identifier such as 'litestream' or 'orders-db'",
            )
        if self.max_restarts < 0:
            raise ConfigError("max_restarts", self.max_restarts, "must be >= 0",
                              "use 0 to never restart, or a small number such as 5")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", self.log_level, f"must be one of {LOG_LEVELS}",
                              "use 'info' unless you are debugging Litestream")
        if self.access_key_id is not None and not self.access_key_id:
            raise ConfigError("access_key_id", "", "is empty",
                              "pass the key id, or leave it unset to use the environment")
        if self.secret_access_key is not None and not self.secret_access_key:
            raise ConfigError("secret_access_key", "***", "is empty",
                              "pass the secret, or leave it unset to use the environment")

    def secrets(self) -> list[str]:
        """Every secret value known, so that logs can be scrubbed of them."""
        found = [self.access_key_id, self.secret_access_key]
        for index, db in enumerate(self.databases):
            for value in _secret_refs(db.replica_url, index)[1].values():
                found += [value, unquote(value)]
        return list(dict.fromkeys(s for s in found if s and len(s) >= 4))

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment Litestream runs with: the only place secrets go."""
        env = dict(base)
        # Litestream 0.5 cannot start any S3 replica while AWS_CA_BUNDLE is set
        # (upstream #639); a custom CA still works through SSL_CERT_FILE/DIR.
        env.pop("AWS_CA_BUNDLE", None)
        if self.access_key_id:
            env["LITESTREAM_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            env["LITESTREAM_SECRET_ACCESS_KEY"] = self.secret_access_key
        for index, db in enumerate(self.databases):
            env.update(_secret_refs(db.replica_url, index)[1])
        return env

    def to_yaml(self, *, socket_path: Path | None = None) -> str:
        """Litestream's config file. It never holds a secret: passwords and secret
        query values (``?token=``, ``?sas=``...) are ``${VAR}`` references."""
        dbs = []
        for index, db in enumerate(self.databases):
            dbs.append({
                "path": str(db.path),
                "replica": {
                    "url": _secret_refs(db.replica_url, index)[0],
                    "sync-interval": _duration(self.sync_interval),
                },
            })
        config: dict[str, Any] = {
            "logging": {"level": self.log_level, "type": "json"},
            # Litestream retries its own final sync this long after SIGTERM. Our flush
            # (POST /sync with wait) has already run by then on a graceful stop, so keep
            # it short: an orphaned child (its app was SIGKILLed) must exit within 2 s.
            "shutdown-sync-timeout": _duration(min(max(self.stop_timeout - 0.5, 0.5), 1.5)),
            "dbs": dbs,
        }
        if socket_path is not None:
            config["socket"] = {"enabled": True, "path": str(socket_path)}
        return yaml.safe_dump(config, sort_keys=False)


class _Options:
    """Keyword option → environment variable → default, with typed errors."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, option: str, value: Any, parse: Callable[[str], Any]) -> Any:
        if value is not None:
            return value
        text = self.environ.get(ENV_PREFIX + option.upper())
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            raise ConfigError(ENV_PREFIX + option.upper(), text, str(exc),
                              "fix or unset the environment variable") from None

    def get(self, option: str, value: Any, parse: Callable[[str], T], default: T) -> T:
        found = self.raw(option, value, parse)
        if found is None:
            return default
        kind = type(default)
        if (kind is int and isinstance(found, bool)) or not isinstance(found, kind):
            raise ConfigError(option, found, f"must be a {kind.__name__}",
                              f"pass a {kind.__name__} such as {default!r}")
        return found

    def seconds(self, option: str, value: Any, default: float) -> float:
        found = self.raw(option, value, float)
        if found is None:
            return default
        if isinstance(found, bool) or not isinstance(found, (int, float)):
            raise ConfigError(option, found, "must be a number of seconds",
                              f"pass a number such as {default}")
        if not math.isfinite(found) or found <= 0:
            raise ConfigError(option, found, "must be a positive, finite number of seconds",
                              f"pass a number such as {default}")
        return float(found)

    def secret(self, option: str, value: str | None, variable: str) -> str | None:
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(option, "***", "must be a string", "pass the value as a str")
            return value
        # Litestream reads these itself from the inherited environment; we only need
        # the values to scrub them from logs.
        return (self.environ.get("LITESTREAM_" + variable)
                or self.environ.get("AWS_" + variable) or None)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _bin_path(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError("bin_path", value, "must be a path",
                          "pass the path of the litestream executable, or None")
    return Path(value).expanduser()


def _status_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "?" in value:
        raise ConfigError("status_path", value, "must be a URL path starting with '/'",
                          "use '/_litestream/status', or None to turn the route off")
    return value


def _databases(database: Any, replica_url: Any) -> tuple[Database, ...]:
    if isinstance(replica_url, Mapping):
        if database is not None:
            raise ConfigError("database", database,
                              "cannot be combined with a replica_url mapping",
                              "drop database=; the mapping's keys are the databases")
        pairs = [(_db_path(db), _replica_url(url, "replica_url")) for db, url in
                 replica_url.items()]
    else:
        if database is None:
            raise ConfigError("database", None, "is required",
                              "pass database='app.db' or set ASGI_LITESTREAM_DATABASE")
        if replica_url is None:
            raise ConfigError(
                "replica_url", None, "is required",
                "pass replica_url='s3://bucket/app' (or 'file:///backups/app') "
                "or set ASGI_LITESTREAM_REPLICA_URL",
            )
        if isinstance(database, (str, os.PathLike)):
            raw = [database]
        elif isinstance(database, Iterable):
            raw = list(database)
        else:
            raise ConfigError("database", database, "must be a path, a sqlite:/// URL or a "
                              "list of them", "pass database='app.db'")
        if not raw:
            raise ConfigError("database", database, "is empty", "name at least one database")
        paths = [_db_path(db) for db in raw]
        base = _replica_url(replica_url, "replica_url")
        if len(paths) == 1:
            pairs = [(paths[0], base)]
        else:
            # Several databases share one base URL: each gets <base>/<file stem>.
            stems = [p.stem for p in paths]
            clash = sorted({s for s in stems if stems.count(s) > 1})
            if clash:
                raise ConfigError(
                    "database", [str(p) for p in paths],
                    f"several databases share the file stem {clash[0]!r}, so they would "
                    "share one replica location",
                    "rename them, or pass replica_url as a mapping {database: url}",
                )
            pairs = [(p, _join_url(base, p.stem)) for p in paths]
    seen: set[Path] = set()
    for path, _ in pairs:
        if path in seen:
            raise ConfigError("database", str(path), "is listed twice", "list it once")
        seen.add(path)
    return tuple(Database(path=p, replica_url=u) for p, u in pairs)


def _db_path(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError("database", value, "must be a path or a sqlite:/// URL",
                          "pass database='app.db' or 'sqlite:///app.db'")
    text = os.fspath(value)
    if isinstance(value, str) and value.startswith("sqlite"):
        # SQLAlchemy spelling: sqlite:///relative.db, sqlite:////absolute.db
        match = re.match(r"^sqlite(\+\w+)?:///(.*)$", value)
        if not match or not match.group(2) or match.group(2).startswith(":memory:"):
            raise ConfigError(
                "database", value, "is not a file-backed SQLite URL",
                "use 'sqlite:///relative.db' or 'sqlite:////absolute/path.db'; "
                "an in-memory database cannot be replicated",
            )
        text = match.group(2).split("?", 1)[0]
    if text in ("", ":memory:") or text.startswith("file:"):
        raise ConfigError("database", value, "is not a database file path",
                          "pass the path of the SQLite file, e.g. 'data/app.db'")
    if "$" in text:
        raise ConfigError("database", value, "contains '$', which Litestream expands as an "
                          "environment variable", "rename the file or its folder")
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise ConfigError("database", value, "is a directory",
                          "pass the SQLite file inside it, e.g. 'data/app.db'")
    if not path.parent.is_dir():
        raise ConfigError("database", value, f"its folder {str(path.parent)!r} does not exist",
                          "create the folder before the app starts")
    return path


def _replica_url(value: Any, option: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(option, value, "must be a non-empty URL string",
                          "pass e.g. 's3://bucket/app' or 'file:///var/backups/app'")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(option, "<unparseable url>", f"is not a valid URL ({exc})",
                          "check the brackets, the port and the escapes") from None
    if parts.scheme not in REPLICA_SCHEMES:
        raise ConfigError(
            option, redact_url(value),
            f"scheme {parts.scheme or '(none)'!r} is not one Litestream supports",
            f"use one of {', '.join(s + '://' for s in REPLICA_SCHEMES)}",
        )
    if "$" in value:
        raise ConfigError(option, redact_url(value),
                          "contains '$', which Litestream expands as an environment variable",
                          "remove the '$'")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(option, value, "a file:// replica needs an absolute path",
                              "write file:///absolute/path (three slashes)")
        return value
    if not parts.hostname:
        raise ConfigError(option, redact_url(value), "has no bucket or host",
                          f"write {parts.scheme}://BUCKET/path")
    url: str = value
    if parts.scheme == "sftp" and not parts.username:
        raise ConfigError(option, redact_url(value), "an sftp replica needs a user",
                          "write sftp://USER@host/path (the password goes in the URL too, "
                          "and only ever reaches Litestream through its environment)")
    if parts.scheme == "s3":
        if len(parts.hostname) < 3:
            raise ConfigError(option, redact_url(value), "S3 bucket names need >= 3 characters",
                              "use the real bucket name")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        # Without a region Litestream makes a network call at start-up to find it,
        # which a local S3 emulator (and some proxies) cannot answer.
        if "endpoint" in query and "region" not in query:
            query["region"] = "us-east-1"
            url = urlunsplit(parts._replace(query=urlencode(query, safe=":/")))
    return url


def _join_url(base: str, leaf: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + quote(leaf)))


def _rewrite_secrets(url: str, replace: Callable[[str | None, str], str]) -> str:
    """``url`` with its password (``replace(None, password)``) and every non-empty
    secret-looking query value (``replace(key, value)``) replaced; unchanged when it
    has neither."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        # rpartition keeps the host as written (case, IPv6 brackets, port).
        netloc = (f"{parts.username or ''}:{replace(None, parts.password)}"
                  f"@{netloc.rpartition('@')[2]}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = [bool(value and _SECRET_QUERY.search(key)) for key, value in pairs]
    if netloc == parts.netloc and not any(secret):
        return url
    query = [(key, replace(key, value) if is_secret else value)
             for (key, value), is_secret in zip(pairs, secret, strict=True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe=":/*${}")))


def _secret_refs(url: str, index: int) -> tuple[str, dict[str, str]]:
    """``url`` with its secrets replaced by ``${VAR}`` references, and the variables'
    values (which go to the child's environment)."""
    values: dict[str, str] = {}

    def reference(key: str | None, value: str) -> str:
        name = "PASSWORD" if key is None else re.sub(r"[^A-Z0-9]", "_", key.upper())
        variable = f"{ENV_PREFIX}REPLICA_{index}_{name}"
        # Litestream pastes the value into the URL as is: keep a query value encoded.
        values[variable] = value if key is None else quote(value, safe="")
        return f"${{{variable}}}"

    return _rewrite_secrets(url, reference), values


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``."""
    try:
        return _rewrite_secrets(url, lambda key, value: "***")
    except ValueError:
        return "<unparseable url>"


def _duration(seconds: float) -> str:
    """A Go duration string, which is what Litestream's YAML expects."""
    return f"{round(seconds * 1000)}ms"

