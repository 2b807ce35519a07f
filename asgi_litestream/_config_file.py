"""An existing ``litestream.yml`` (``config_path=``): its databases and replicas, under
our supervision.

What the file says about *what* to replicate *where* is kept as written (replica keys,
``$VAR`` references, global credentials, retention...). What supervision needs is ours
and replaces the file's: the control socket, JSON logs, the metrics address and the
shutdown sync timeout. ``exec`` is refused: the app is the process.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ._exceptions import ConfigError

# Top-level keys the supervisor sets itself (see Settings.to_yaml).
OURS = ("socket", "logging", "addr", "shutdown-sync-timeout")
_SECRET_KEYS = ("secret-access-key", "access-key-id", "password", "account-key", "sas-token",
                "token")


def read_config_file(path: Path) -> tuple[dict[str, Any], list[tuple[Path, str, dict[str, Any]]]]:
    """(the file's other top-level keys, [(database path, display URL, replica config)])."""
    option = "config_path"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(option, str(path), f"cannot be read ({exc.strerror})",
                          "point config_path at your litestream.yml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(option, str(path), f"is not valid YAML ({exc})",
                          "fix the file (litestream databases -config FILE checks it)") from None
    if not isinstance(data, dict) or not isinstance(data.get("dbs"), list) or not data["dbs"]:
        raise ConfigError(option, str(path), "has no `dbs:` list",
                          "list the databases under dbs:, as Litestream's docs show")
    if "exec" in data:
        raise ConfigError(option, str(path), "has an `exec:` key",
                          "remove it: your ASGI app is the process Litestream runs beside")
    databases = [_database(entry, path) for entry in data["dbs"]]
    extras = {k: v for k, v in data.items() if k != "dbs" and k not in OURS}
    return extras, databases


def _database(entry: Any, source: Path) -> tuple[Path, str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ConfigError("config_path", str(source), f"has a db without a path: {entry!r}",
                          "give every entry under dbs: a path")
    db = Path(os.path.expanduser(entry["path"]))
    db = db if db.is_absolute() else (source.parent / db)
    replicas = entry.get("replicas")
    replica = entry.get("replica")
    if replica is None and isinstance(replicas, list) and len(replicas) == 1:
        replica = replicas[0]
    if not isinstance(replica, dict):
        raise ConfigError("config_path", str(source), f"{db}: needs exactly one replica",
                          "give it one `replica:` (Litestream 0.5 replicates each "
                          "database to one place)")
    return db.absolute(), display_url(replica), copy.deepcopy(replica)


def display_url(replica: Mapping[str, Any]) -> str:
    """A URL naming the replica, for logs and the status (the file's ``url``, or one
    built from its typed keys)."""
    if isinstance(replica.get("url"), str):
        return str(replica["url"])
    kind = str(replica.get("type", "file"))
    where = str(replica.get("bucket", "")) + "/" + str(replica.get("path", "")).lstrip("/")
    if kind == "file":
        return f"file://{replica.get('path', '')}"
    return f"{kind}://{where}"


def literal_secrets(config: Any) -> list[str]:
    """Secret values written out in the file rather than as ``$VAR``: to scrub them."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            if key in _SECRET_KEYS and isinstance(value, str) and "$" not in value:
                found.append(value)
            else:
                found += literal_secrets(value)
    elif isinstance(config, list):
        for value in config:
            found += literal_secrets(value)
    return found
