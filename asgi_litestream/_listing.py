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
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ._config import Settings
from ._databases import Database
from ._exceptions import ConfigError
from ._s3 import s3_client

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
    """File names of the databases the folder's replica holds (blocking I/O)."""
    parts = urlsplit(folder.replica_url)
    if parts.scheme == "file":
        root = Path(unquote(parts.path))
        if not root.is_dir():
            return []
        return sorted(entry.name for entry in root.iterdir()
                      if (entry / "ltx").is_dir())
    return _s3_names(parts.netloc, parts.path.strip("/"), dict(parse_qsl(parts.query)), env)


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


_LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


def replica_txid(database: Database, env: Mapping[str, str]) -> int:
    """The newest transaction the replica holds (0: none), from its LTX file names
    at every level (``ltx/<level>/<min>-<max>.ltx``), without downloading any."""
    parts = urlsplit(database.replica_url)
    if parts.scheme == "file":
        return head_from_names(
            p.name for p in Path(unquote(parts.path)).glob("ltx/*/*.ltx")) or 0
    client = s3_client(dict(parse_qsl(parts.query)), env)
    prefix = parts.path.strip("/")
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=parts.netloc, Prefix=f"{prefix}/ltx/" if prefix else "ltx/"):
        names += [entry["Key"].rsplit("/", 1)[-1] for entry in page.get("Contents", ())]
    return head_from_names(names) or 0


def local_txid(path: Path) -> int:
    """The newest transaction Litestream recorded for this database file here (0:
    never replicated from this file), from its local LTX files."""
    return head_from_names(p.name for p in path.with_name(f".{path.name}-litestream").glob(
        "ltx/*/*.ltx")) or 0


def head_from_names(names: Iterable[str]) -> int | None:
    """The highest txid among LTX file names (``<min hex16>-<max hex16>.ltx``); None
    when there is none (nothing replicated yet)."""
    found = [int(m.group(2), 16) for m in map(_LTX_NAME.match, names) if m]
    return max(found, default=None)
