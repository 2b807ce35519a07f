"""What ``database=`` (and ``replica_url=``) may be: paths, ``sqlite:///`` URLs, the
app's own handles (a SQLAlchemy ``Engine``/``AsyncEngine``/``URL``, a Django alias), or
lists of them, each paired with its replica. Duck-typed: SQLAlchemy and Django are
imported only for such a value."""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from .names import member_url
from .urls import check_replica_config, check_replica_url, join_url, redact_url


@dataclass(frozen=True, slots=True, kw_only=True)
class Database:
    """One SQLite database and where Litestream replicates it."""

    path: Path
    # The URL as given; may hold a password in its userinfo, hence no repr.
    replica_url: str = field(repr=False)
    # The replica's keys as an existing litestream.yml wrote them (config_path=).
    replica_config: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # Set for a folder of databases ("/data/tenants/*.db"): ``path`` is the folder,
    # every file in it whose name matches is a database, replicated to
    # ``<replica_url>/<file name>`` (Litestream's own layout for ``dir:``).
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.replica_config is not None:
            # From config_path's file, which skips check_replica_url: its S3 bucket name
            # is checked here, as the keyword's is there.
            check_replica_config(self.replica_config, "config_path", self.replica_url,
                                 str(self.path))

    @property
    def is_folder(self) -> bool:
        return self.pattern is not None

    @property
    def where(self) -> str:
        """The file, or the folder and its pattern, as the user wrote it."""
        return str(self.path / self.pattern) if self.pattern else str(self.path)

    def member(self, path: Path) -> Database:
        """One database of this folder, as Litestream replicates it."""
        return Database(path=path, replica_url=member_url(self.replica_url, path.name))

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is (or would be) a database of this folder."""
        return (self.pattern is not None and path.parent == self.path
                and fnmatch.fnmatchcase(path.name, self.pattern))

    @property
    def replica(self) -> str:
        """The replica location with every credential replaced by ``***``."""
        return redact_url(self.replica_url)

    def __repr__(self) -> str:
        return f"Database(path={self.where!r}, replica={self.replica!r})"


def databases_from(database: Any, replica_url: Any) -> tuple[Database, ...]:
    if isinstance(replica_url, Mapping):
        if database is not None:
            raise ConfigError("database", database,
                              "cannot be combined with a replica_url mapping",
                              "drop database=; the mapping's keys are the databases")
        pairs = [(_folder_or_file(db), check_replica_url(url, "replica_url")) for db, url in
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
        if isinstance(database, (str, os.PathLike)) or _sqlalchemy_url(database):
            raw = [database]
        elif isinstance(database, Iterable) and not hasattr(database, "_fields"):
            raw = list(database)  # a named tuple is one value, never a list of them
        else:
            raise ConfigError("database", database, "must be a path, a sqlite:/// URL or a "
                              "list of them", "pass database='app.db'")
        if not raw:
            raise ConfigError("database", database, "is empty", "name at least one database")
        paths = [_folder_or_file(db) for db in raw]
        base = check_replica_url(replica_url, "replica_url")
        if len(paths) == 1:
            pairs = [(paths[0], base)]
        else:
            # Several databases share one base URL: each gets <base>/<file stem>
            # (a folder: <base>/<folder name>).
            stems = [p.name if pattern else p.stem for p, pattern in paths]
            clash = sorted({s for s in stems if stems.count(s) > 1})
            if clash:
                raise ConfigError(
                    "database", [str(p) for p, _ in paths],
                    f"several databases share the file stem {clash[0]!r}, so they would "
                    "share one replica location",
                    "rename them, or pass replica_url as a mapping {database: url}",
                )
            pairs = [((p, pattern), join_url(base, stem))
                     for (p, pattern), stem in zip(paths, stems, strict=True)]
    seen: set[Path] = set()
    for (path, _), _url in pairs:
        if path in seen:
            raise ConfigError("database", str(path), "is listed twice", "list it once")
        seen.add(path)
    found = tuple(Database(path=p, replica_url=u, pattern=pattern)
                  for (p, pattern), u in pairs)
    for folder in (db for db in found if db.is_folder):
        for db in found:
            if folder.holds(db.path):
                raise ConfigError("database", str(db.path), f"is also in the folder "
                                  f"{folder.where!r}",
                                  "list it once: drop it, or narrow the pattern")
    return found


_GLOB = re.compile(r"[*?\[]")


def _folder_or_file(value: Any) -> tuple[Path, str | None]:
    """A database file, or a folder of them given as ``folder/<pattern>``."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if text is None or text.startswith(("sqlite", "django:")) or not _GLOB.search(text):
        return _db_path(value), None
    folder, _, pattern = text.rpartition("/")
    if not pattern or _GLOB.search(folder):
        raise ConfigError("database", text, "has a pattern outside its file name",
                          "use one folder and a file pattern, e.g. '/data/tenants/*.db'")
    if "$" in text:
        raise ConfigError("database", text, "contains '$', which Litestream expands as an "
                          "environment variable", "rename the folder")
    path = Path(folder or ".").expanduser().absolute()
    if not path.is_dir():
        raise ConfigError("database", text, f"its folder {str(path)!r} does not exist",
                          "create the folder before the app starts")
    return path, pattern


def _sqlalchemy_url(value: Any) -> Any:
    """The SQLAlchemy ``URL`` of an ``Engine``, ``AsyncEngine`` or ``URL`` (duck-typed:
    SQLAlchemy is never imported); None for anything else."""
    url = getattr(value, "url", value)
    if hasattr(url, "drivername") and hasattr(url, "database"):
        return url
    return None


def _django_database(alias: str) -> str:
    """``NAME`` of ``settings.DATABASES[alias]`` (Django imported only for a
    ``django:`` value)."""
    try:
        settings = importlib.import_module("django.conf").settings
        improperly_configured = importlib.import_module(
            "django.core.exceptions").ImproperlyConfigured
    except ImportError:
        raise ConfigError("database", f"django:{alias}", "Django is not installed",
                          "pass the database's path instead") from None
    try:
        config = settings.DATABASES[alias]
    except improperly_configured as exc:
        raise ConfigError("database", f"django:{alias}", f"Django is not configured ({exc})",
                          "set DJANGO_SETTINGS_MODULE before the app starts") from None
    except KeyError:
        raise ConfigError("database", f"django:{alias}", "is not in settings.DATABASES",
                          f"use one of {', '.join(sorted(settings.DATABASES))}") from None
    if "sqlite3" not in str(config.get("ENGINE", "")):
        raise ConfigError("database", f"django:{alias}", f"uses {config.get('ENGINE')}",
                          "Litestream replicates SQLite only (django.db.backends.sqlite3)")
    return str(config.get("NAME") or "")


def _db_path(value: Any) -> Path:
    if isinstance(value, str) and value.startswith("django:"):
        value = _django_database(value.removeprefix("django:") or "default")
    url = _sqlalchemy_url(value)
    if url is not None:
        if not str(url.drivername).startswith("sqlite"):
            raise ConfigError("database", str(url.drivername), "is not a SQLite engine",
                              "Litestream replicates SQLite only: pass a sqlite:/// engine")
        value = url.database or ":memory:"  # a URL's database is its file path
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
