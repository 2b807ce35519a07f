"""Settings: parse and validate every option before anything is spawned.

Each option (declared once, in _config/options.py) can be given as a keyword argument or,
when it is not, through an ``ASGI_LITESTREAM_*`` environment variable; otherwise its
default applies. The result is a frozen :class:`Settings`, the only input of the
config writer and of the replication service.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .._exceptions import ConfigError
from .config_file import (
    config_text,
    file_s3_keys,
    file_secret_refs,
    literal_secrets,
    read_config_file,
    yaml_escaped,
)
from .databases import Database, databases_from
from .names import DOLLAR_VAR, escape_dollars, escape_dollars_in_path
from .options import DEFAULT, OPTION_NAMES, OPTIONS
from .secret_files import keys_from_files
from .urls import secret_refs

LOG_LEVELS = ("debug", "info", "warn", "error")
ROLES = ("primary", "follower")
IF_BEHIND = ("restore", "fail")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEFAULTS = {option.name: option.default for option in OPTIONS}


def resolve_route(option: str, value: Any, environ: Mapping[str, str]) -> str | None:
    """A route's path: the keyword when given (None: off), else its environment variable
    (empty: off), else the default. Unvalidated: Settings checks it."""
    return OPTIONS[OPTION_NAMES.index(option)].read(value, environ)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Validated options of one LitestreamLifespan. Build it with :meth:`from_options`."""

    databases: tuple[Database, ...]
    config_path: Path | None = None
    # The rest of that file's top level (credentials, defaults...), kept as written.
    file_config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    # Where the keys came from: "option", "file", "environment" or "default chain".
    credentials_source: str = "default chain"
    name: str = _DEFAULTS["name"]
    bin_path: Path | None = None
    download: bool = _DEFAULTS["download"]
    download_url: str | None = field(default=None, repr=False)  # may hold credentials
    litestream_version: str = _DEFAULTS["litestream_version"]
    litestream_sha256: str | None = field(default=None, repr=False)
    status_path: str | None = _DEFAULTS["status_path"]
    metrics_path: str | None = _DEFAULTS["metrics_path"]
    dashboard_path: str | None = None
    dashboard_user: str | None = None
    dashboard_password: str | None = field(default=None, repr=False)
    dashboard_auth: Any = field(default=None, repr=False)  # (Request) -> bool
    sync_interval: float = _DEFAULTS["sync_interval"]
    startup_timeout: float = _DEFAULTS["startup_timeout"]
    flush_timeout: float = _DEFAULTS["flush_timeout"]
    stop_timeout: float = _DEFAULTS["stop_timeout"]
    max_restarts: int = _DEFAULTS["max_restarts"]
    restart_window: float = _DEFAULTS["restart_window"]
    max_backoff: float = _DEFAULTS["max_backoff"]
    log_level: str = _DEFAULTS["log_level"]
    health_interval: float = _DEFAULTS["health_interval"]
    max_lag: float = 10.0  # from_options derives it from the intervals
    strict_status: bool = _DEFAULTS["strict_status"]
    restore_if_missing: bool = _DEFAULTS["restore_if_missing"]
    restore_timeout: float = _DEFAULTS["restore_timeout"]
    sqlite_pragmas: bool = _DEFAULTS["sqlite_pragmas"]
    verify_interval: float | None = None
    role: str = _DEFAULTS["role"]
    lease: bool = _DEFAULTS["lease"]
    lease_ttl: float = _DEFAULTS["lease_ttl"]
    if_behind: str = _DEFAULTS["if_behind"]
    keep_behind: int = _DEFAULTS["keep_behind"]
    public_details: bool = _DEFAULTS["public_details"]
    status_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``ASGI_LITESTREAM_*`` variables alone (for containers)."""
        return cls.from_options(environ=environ)

    @classmethod
    def from_options(cls, *, environ: Mapping[str, str] | None = None,
                     **options: Any) -> Settings:
        """Validate keyword options (the middleware's), falling back to the
        environment, then to the defaults."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; the options are "
                            f"{', '.join(OPTION_NAMES)}")
        env = os.environ if environ is None else environ
        values = {option.name: option.read(options.get(option.name, DEFAULT
                                                       if option.kind == "route"
                                                       else None), env)
                  for option in OPTIONS}
        if values["max_lag"] is None:
            # A replica may trail by a few sync intervals before that means trouble.
            values["max_lag"] = max(10 * values["sync_interval"],
                                    3 * values["health_interval"], 10.0)
        if values["config_path"] is not None:
            values["config_path"] = Path(values["config_path"]).expanduser().absolute()
            for other in ("database", "replica_url"):
                if values[other] is not None:
                    raise ConfigError(other, "...", "is also given by config_path="
                                      f"{str(values['config_path'])!r}",
                                      f"drop {other}=, or config_path=, not keep both")
            values.pop("database"), values.pop("replica_url")
            values["file_config"], found = read_config_file(values["config_path"])
            values["databases"] = tuple(Database(path=path, replica_url=url,
                                                 replica_config=replica)
                                        for path, url, replica in found)
        else:
            values["databases"] = databases_from(values.pop("database"),
                                             values.pop("replica_url"))
        values["bin_path"] = _bin_path(values["bin_path"])
        values["credentials_source"] = keys_from_files(values, options, env)
        for route in ("status_path", "metrics_path", "dashboard_path"):
            values[route] = _route(route, values[route])
        values["log_level"] = values["log_level"].lower()
        values["role"] = values["role"].lower()
        values["if_behind"] = values["if_behind"].lower()
        return cls(**values)

    def __post_init__(self) -> None:
        if self.dashboard_path is not None and self.dashboard_auth is None and not (
            self.dashboard_user and self.dashboard_password
        ) and not self.status_token:
            raise ConfigError(
                "dashboard_path", self.dashboard_path, "the status page needs an authorization",
                "set ASGI_LITESTREAM_DASHBOARD_USER and ASGI_LITESTREAM_DASHBOARD_PASSWORD, "
                "or ASGI_LITESTREAM_STATUS_TOKEN, or pass dashboard_auth=<function of the "
                "request>",
            )
        if not _NAME.match(self.name):
            raise ConfigError(
                "name", self.name, "must be 1-64 letters, digits, '_', '.' or '-'",
                "use a short identifier such as 'litestream' or 'orders-db'",
            )
        if self.max_restarts < 0:
            raise ConfigError("max_restarts", self.max_restarts, "must be >= 0",
                              "use 0 to never restart, or a small number such as 5")
        if self.role not in ROLES:
            raise ConfigError("role", self.role, f"must be one of {ROLES}",
                              "use 'primary' (replicates) or 'follower' (a read replica)")
        if self.role == "follower" and any(db.is_folder for db in self.databases):
            raise ConfigError("role", self.role, "follows databases named one by one, "
                              "not a folder", "list the databases to follow")
        if self.lease_ttl < 3:
            raise ConfigError("lease_ttl", self.lease_ttl, "must be >= 3 seconds",
                              "use the default 30, or at least a few seconds: it is renewed "
                              "every third of it")
        if self.lease and self.role == "follower":
            raise ConfigError("lease", True, "a follower never writes, so holds no lease",
                              "drop lease= on the followers")
        if self.dashboard_path is not None and self.role == "follower":
            # The page draws a primary's replication; a follower's copies are on the
            # status route (ready, lag per copy), which it would otherwise answer 503.
            raise ConfigError("dashboard_path", self.dashboard_path,
                              "the status page shows a primary, not a follower",
                              "drop dashboard_path on the followers; their status route "
                              "shows each copy's lag")
        if self.if_behind not in IF_BEHIND:
            raise ConfigError("if_behind", self.if_behind, f"must be one of {IF_BEHIND}",
                              "use 'restore' (set the file aside, restore the replica) or "
                              "'fail' (refuse to start)")
        if self.keep_behind < 0:
            raise ConfigError("keep_behind", self.keep_behind, "must be >= 0",
                              "use a small number such as 3 (0 keeps none)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", self.log_level, f"must be one of {LOG_LEVELS}",
                              "use 'info' unless you are debugging Litestream")
        if self.access_key_id is not None and not self.access_key_id:
            raise ConfigError("access_key_id", "", "is empty",
                              "pass the key id, or leave it unset to use the environment")
        if self.secret_access_key is not None and not self.secret_access_key:
            raise ConfigError("secret_access_key", "***", "is empty",
                              "pass the secret, or leave it unset to use the environment")
        if self.access_key_id_file is not None:
            self.check_rotatable("access_key_id_file", str(self.access_key_id_file))

    def check_rotatable(self, option: str, value: str) -> None:
        """ConfigError when config_path's S3 replicas carry keys of their own: Litestream
        reads those from its generated file, so new keys would reach the lease and the
        listings but not Litestream."""
        if any(file_s3_keys(self.file_config, self.databases, os.environ).values()):
            raise ConfigError(option, value, f"cannot change the keys the replicas in "
                              f"{self.config_path} carry themselves",
                              "take access-key-id and secret-access-key out of that file "
                              "(give them as options, key files or variables), or change "
                              "them there and restart")

    @property
    def lease_replica(self) -> str:
        """Where the lease lives: the first database's replica (``lock.json`` in it)."""
        return min(self.databases, key=lambda db: db.path).replica_url

    def secrets(self) -> list[str]:
        """Every secret value known, so that logs can be scrubbed of them."""
        found = [self.access_key_id, self.secret_access_key, self.dashboard_password,
                 self.status_token,
                 *literal_secrets(self.file_config),
                 *(s for db in self.databases for s in literal_secrets(db.replica_config))]
        found += [key for keys in file_s3_keys(self.file_config, self.databases,
                                               os.environ).values() if keys for key in keys]
        urls = [db.replica_url for db in self.databases] + [self.download_url or ""]
        for index, url in enumerate(urls):
            for value in secret_refs(url, index)[1].values():
                found += [value, unquote(value)]
        return list(dict.fromkeys(s for s in found if s and len(s) >= 4))

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment Litestream runs with: the only place secrets go."""
        env = dict(base)
        # Litestream 0.5 cannot start any S3 replica while AWS_CA_BUNDLE is set
        # (upstream #639); a custom CA still works through SSL_CERT_FILE/DIR.
        env.pop("AWS_CA_BUNDLE", None)
        env.pop("ASGI_LITESTREAM_DASHBOARD_PASSWORD", None)  # ours, not Litestream's
        env.pop("ASGI_LITESTREAM_STATUS_TOKEN", None)
        if self.access_key_id:
            # Litestream 0.5.17 reads AWS_ACCESS_KEY_ID before LITESTREAM_ACCESS_KEY_ID
            # (measured): an ambient pair would beat the keys given here, and those of
            # a rotation (written to LITESTREAM_*). The keys given are in LITESTREAM_*
            # (an environment's pair too: access_key_id reads it). AWS_SESSION_TOKEN
            # stays: it is how temporary keys given here get their token.
            env.pop("AWS_ACCESS_KEY_ID", None)
            env.pop("AWS_SECRET_ACCESS_KEY", None)
            env["LITESTREAM_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            env["LITESTREAM_SECRET_ACCESS_KEY"] = self.secret_access_key
        for index, db in enumerate(self.databases):
            env.update(secret_refs(db.replica_url, index)[1])
        env[DOLLAR_VAR] = "$"  # see _names: a '$' in a name is written ${DOLLAR_VAR}
        # Secrets config_path's file writes out are references in the generated one.
        _, _, values = file_secret_refs(self.file_config,
                                        [db.replica_config for db in self.databases])
        env.update({name: yaml_escaped(value) for name, value in values.items()})
        # Our own S3 calls (the lease, the listings) read credentials from the
        # environment: those the file gives its S3 replicas, when that is one pair.
        keys = file_s3_keys(self.file_config, self.databases, base)
        pairs = set(keys.values())
        shared = pairs.pop() if len(pairs) == 1 else None
        if shared is not None:
            env["LITESTREAM_ACCESS_KEY_ID"], env["LITESTREAM_SECRET_ACCESS_KEY"] = shared
        elif self.lease and keys.get(min(self.databases, key=lambda db: db.path).path):
            raise ConfigError(
                "lease", True, f"the lease is kept in the first database's replica, which "
                f"has keys of its own in {self.config_path}, and other S3 replicas there "
                "have other keys (or none), so the lease cannot be written with its keys",
                "give every S3 replica in the file the same access-key-id and "
                "secret-access-key (or write them once at the top of the file), or run "
                "without lease")
        return env

    def to_yaml(self, *, socket_path: Path | None = None,
                metrics_addr: str | None = None) -> str:
        """Litestream's config file. It never holds a secret: passwords, secret query
        values (``?token=``, ``?sas=``...) and the secrets config_path's file writes
        out are ``${VAR}`` references."""
        # config_path's file as written, but its literal secrets as ${VAR} references.
        file_config, replicas, _ = file_secret_refs(
            self.file_config, [db.replica_config for db in self.databases])
        dbs = []
        for index, db in enumerate(self.databases):
            replica: dict[str, Any] = {"url": db.replica_url,
                                       "sync-interval": _duration(self.sync_interval)}
            if db.replica_config is not None:  # as the user's litestream.yml has it
                replica = replicas[index]
            if isinstance(replica.get("url"), str):
                replica["url"] = secret_refs(replica["url"], index)[0]
                if db.replica_config is None:
                    # A folder's member: its file name, in the path, is data.
                    replica["url"] = escape_dollars_in_path(replica["url"])
            # Never expanded: a '$' in a path is a file name's (see _names).
            where = escape_dollars(str(db.path))
            if db.pattern is not None:
                # Litestream finds the folder's databases, and with watch one created
                # later within milliseconds (inotify): no restart, no call per database.
                dbs.append({"dir": where, "pattern": db.pattern, "watch": True,
                            "replica": replica})
            else:
                dbs.append({"path": where, "replica": replica})
        config: dict[str, Any] = {
            **file_config,
            "logging": {"level": self.log_level, "type": "json"},
            # Litestream retries its own final sync this long after SIGTERM. Our flush
            # (POST /sync with wait) has already run by then on a graceful stop, so keep
            # it short: an orphaned child (its app was SIGKILLed) must exit within 2 s.
            "shutdown-sync-timeout": _duration(min(max(self.stop_timeout - 0.5, 0.5), 1.5)),
            "dbs": dbs,
        }
        if socket_path is not None:
            config["socket"] = {"enabled": True, "path": str(socket_path)}
        if metrics_addr is not None:
            config["addr"] = metrics_addr  # Litestream's Prometheus /metrics, loopback only
        return config_text(config)


def _bin_path(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError("bin_path", value, "must be a path",
                          "pass the path of the litestream executable, or None")
    return Path(value).expanduser()


def _route(option: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "?" in value:
        raise ConfigError(option, value, "must be a URL path starting with '/'",
                          "use e.g. '/_litestream/status', or None to turn the route off")
    return value


def _duration(seconds: float) -> str:
    """A Go duration string, which is what Litestream's YAML expects."""
    return f"{round(seconds * 1000)}ms"

