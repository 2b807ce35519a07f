"""Which databases a folder's replica holds: the names under its replica URL.

Litestream replicates ``dir:`` entries to ``<replica_url>/<file name>`` but has no
command that lists them (nor a restore-all for a folder: upstream #408). A
``file://`` replica is a directory listing; an ``s3://`` one is a ListObjectsV2 with
a delimiter, made by boto3 (the optional ``[s3]`` extra): a kept library signs the
request, never hand-written signing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from .._config.databases import Database
from .._config.names import member_name, member_root, name_problem
from .._config.settings import Settings
from .._exceptions import ConfigError
from .s3 import s3_client

logger = logging.getLogger("asgi_litestream")

_LISTABLE = ("file", "s3")


def check_listable(folder: Database) -> None:
    """At startup, before anything is spawned: restoring this folder is possible."""
    scheme = urlsplit(folder.replica_url).scheme
    if scheme not in _LISTABLE:
        raise ConfigError(
            "replica_url", folder.replica, f"restoring a folder of databases lists its "
            f"replica, which is supported for {' and '.join(_LISTABLE)}:// replicas",
            "use an s3:// or file:// replica, or restore_if_missing=False")
    if scheme == "s3" and importlib.util.find_spec("boto3") is None:
        raise ConfigError(
            "replica_url", folder.replica, "restoring a folder from S3 lists the bucket "
            "with boto3, which is not installed", "pip install 'asgi-litestream[s3]'")


def replica_names(folder: Database, env: Mapping[str, str]) -> list[str]:
    """File names of the databases the folder's replica holds (blocking I/O). A name
    that cannot be a database file here is left out, with an error line naming it."""
    parts = urlsplit(folder.replica_url)
    found: list[tuple[str, str | None, str | None]] = []  # (as stored, name, problem)
    if parts.scheme == "file":
        # The members' folders hold their names escaped (see _names).
        root = Path(member_root(folder.replica_url))
        if not root.is_dir():
            return []
        found = [(entry.name, *member_name(entry.name)) for entry in root.iterdir()
                 if (entry / "ltx").is_dir()]
    else:
        found = [(name, name, name_problem(name)) for name in _s3_names(
            parts.netloc, unquote(parts.path).strip("/"), dict(parse_qsl(parts.query)), env)]
    names = []
    for stored, name, problem in found:
        if name is None or problem is not None:
            logger.error("litestream: the replica of %s holds %r, which cannot be a "
                         "database file here (%s): not restored. Fix: restore it by hand "
                         "under another name (litestream restore -o FILE URL)",
                         folder.where, stored, problem)
        else:
            names.append(name)
    return sorted(names)


def with_folders_listed(settings: Settings) -> Settings:
    """The settings with each folder replaced by the databases its replica holds, for
    the commands (restore, backups, verify), which work database by database."""
    if not any(db.is_folder for db in settings.databases):
        return settings
    env = settings.child_env(os.environ)
    databases: list[Database] = []
    for db in settings.databases:
        if db.is_folder:
            check_listable(db)
            databases += [db.member(db.path / name) for name in replica_names(db, env)
                          if db.holds(db.path / name)]
        else:
            databases.append(db)
    return dataclasses.replace(settings, databases=tuple(databases))


def _s3_names(bucket: str, prefix: str, query: dict[str, str],
              env: Mapping[str, str]) -> list[str]:
    # The [s3] extra; check_listable() made sure it is there.
    client = s3_client(query, env)
    base = f"{prefix}/" if prefix else ""
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=base, Delimiter="/"):
        names += [entry["Prefix"][len(base):].rstrip("/")
                  for entry in page.get("CommonPrefixes", ())]
    return sorted(names)
