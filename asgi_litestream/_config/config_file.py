"""An existing ``litestream.yml`` (``config_path=``): its databases and replicas, under
our supervision.

What the file says about *what* to replicate *where* is kept as written (replica keys,
``$VAR`` references, global credentials, retention...). What supervision needs is ours
and replaces the file's: the control socket, JSON logs, the metrics address and the
shutdown sync timeout. ``exec`` is refused: the app is the process.

Secrets the file writes out literally never reach the generated config: they become
``${VAR}`` references to the child's environment (:func:`file_secret_refs`). Our own S3
calls (the lease, the listings) read the replica as Litestream does, typed keys and
top-level defaults included (:func:`replica_url`, :func:`s3_keys`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .._exceptions import ConfigError

# Top-level keys the supervisor sets itself (see Settings.to_yaml).
OURS = ("socket", "logging", "addr", "shutdown-sync-timeout")
# Keys whose values are secrets, in a replica or at the top level (Litestream 0.5's
# ReplicaSettings: S3, ABS, SFTP, WebDAV, NATS, SSE-C, age).
_SECRET_KEYS = frozenset((
    "secret-access-key", "access-key-id", "password", "webdav-password", "account-key",
    "sas-token", "token", "sse-customer-key", "jwt", "seed", "nkey", "identities"))
ENV_PREFIX = "ASGI_LITESTREAM_CONFIG_"
# Replica keys the file's top level gives every replica that lacks them.
_INHERITED = frozenset(("bucket", "endpoint", "region", "force-path-style", "skip-verify"))


def read_config_file(path: Path, environ: Mapping[str, str] | None = None
                     ) -> tuple[dict[str, Any], list[tuple[Path, str, dict[str, Any]]]]:
    """(the file's other top-level keys, [(database path, replica URL, replica config)])."""
    import yaml  # only for a user's own file: what we write is JSON (config_text)

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
    extras = {k: v for k, v in data.items() if k != "dbs" and k not in OURS}
    env = os.environ if environ is None else environ
    databases = [_database(entry, path, extras, env) for entry in data["dbs"]]
    return extras, databases


def _database(entry: Any, source: Path, defaults: Mapping[str, Any],
              environ: Mapping[str, str]) -> tuple[Path, str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ConfigError("config_path", str(source), f"has a db without a path: {entry!r}",
                          "give every entry under dbs: a path")
    # As Litestream reads it: $VAR expanded, then ~, then relative to where it runs
    # (the generated config names the path it found, with any '$' in it kept as is).
    db = Path(os.path.expanduser(expand_env(entry["path"], environ)))
    db = db if db.is_absolute() else (source.parent / db)
    replicas = entry.get("replicas")
    replica = entry.get("replica")
    if replica is None and isinstance(replicas, list) and len(replicas) == 1:
        replica = replicas[0]
    if not isinstance(replica, dict):
        raise ConfigError("config_path", str(source), f"{db}: needs exactly one replica",
                          "give it one `replica:` (Litestream 0.5 replicates each "
                          "database to one place)")
    return db.absolute(), replica_url(replica, defaults, environ), copy.deepcopy(replica)


def replica_url(replica: Mapping[str, Any], defaults: Mapping[str, Any],
                environ: Mapping[str, str]) -> str:
    """A URL for the replica as Litestream reads it, for our own calls to it (the
    lease, the listings) and for the logs: the file's ``url`` or one built from its
    typed keys, ``$VAR`` expanded. An S3 replica's endpoint, region and addressing
    (the replica's keys, else the file's top-level ones) are its query; its keys
    never are (:func:`s3_keys`)."""
    def get(key: str) -> Any:
        value = replica.get(key)
        if value in (None, "") and key in _INHERITED:
            value = defaults.get(key)
        return expand_env(value, environ) if isinstance(value, str) else value

    url = get("url") if isinstance(replica.get("url"), str) else None
    kind = urlsplit(url).scheme if url else str(get("type") or "file")
    if url is None:
        where = str(get("path") or "")
        if kind == "file":
            return "file://" + quote(os.path.abspath(os.path.expanduser(where)))
        host = get("bucket") if kind != "sftp" else get("host")
        url = f"{kind}://{host or ''}/{quote(where.lstrip('/'))}"
    if kind != "s3":
        return str(url)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    # Litestream: a key of the file wins over the URL's query.
    for key, name in (("endpoint", "endpoint"), ("region", "region")):
        if get(key):
            query[name] = str(get(key))
    if get("force-path-style") is not None:
        query["forcePathStyle"] = "true" if get("force-path-style") is True else "false"
    if get("skip-verify") is True:
        query["skipVerify"] = "true"
    if query.get("endpoint") and "forcePathStyle" not in query:
        query["forcePathStyle"] = "true"  # Litestream's default with an endpoint
    return urlunsplit(parts._replace(query=urlencode(query, safe=":/")))


def s3_keys(replica: Mapping[str, Any], defaults: Mapping[str, Any],
            environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The access key id and secret the file gives this replica (its own, else the
    top-level ones), ``$VAR`` expanded; None when it gives none, so that the
    environment's credentials apply (to Litestream and to us alike)."""
    found = []
    for key in ("access-key-id", "secret-access-key"):
        value = replica.get(key) or defaults.get(key)
        found.append(expand_env(str(value), environ) if value not in (None, "") else "")
    return (found[0], found[1]) if found[0] else None


def file_s3_keys(file_config: Mapping[str, Any], databases: Iterable[Any],
                 environ: Mapping[str, str]) -> dict[Path, tuple[str, str] | None]:
    """The keys the file gives each of its S3 replicas, by database path (``databases``:
    the settings' ``Database`` records; those not from the file are left out)."""
    return {db.path: s3_keys(db.replica_config, file_config, environ)
            for db in databases if db.replica_config is not None
            and urlsplit(db.replica_url).scheme == "s3"}


class SecretRef(str):
    """``${VAR}`` standing for a secret in a generated config. Written double-quoted
    (:func:`config_text` writes every string so),
    and the variable holds the value escaped for that (:func:`yaml_escaped`): Litestream
    pastes it into the text before parsing, so any character survives."""


def config_secret_refs(config: Any, prefix: str) -> tuple[Any, dict[str, str]]:
    """A copy of ``config`` with each secret it writes out literally replaced by a
    :class:`SecretRef` to ``<prefix><KEY>``, and those variables' raw values. A value
    with a ``$`` is already a reference, and stays."""
    values: dict[str, str] = {}

    def walk(value: Any, name: str, secret: bool) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, f"{name}_{_var(key)}" if name else _var(key),
                              key in _SECRET_KEYS) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, f"{name}_{index}", secret) for index, item in enumerate(value)]
        if secret and isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            if text and "$" not in text:
                values[prefix + name] = text
                return SecretRef("${" + prefix + name + "}")
        return copy.deepcopy(value)

    return walk(config, "", False), values


def literal_secrets(config: Any) -> list[str]:
    """Secret values written out in the file rather than as ``$VAR``: to scrub them."""
    return list(config_secret_refs(config, "")[1].values())


def file_secret_refs(file_config: Mapping[str, Any],
                     replicas: Sequence[Mapping[str, Any] | None]
                     ) -> tuple[dict[str, Any], list[Any], dict[str, str]]:
    """The file's top level and each database's replica config (None: not from the
    file) with their literal secrets as references, and the variables' raw values."""
    top, values = config_secret_refs(dict(file_config), ENV_PREFIX)
    copies = []
    for index, replica in enumerate(replicas):
        found, more = config_secret_refs(replica, f"{ENV_PREFIX}{index}_")
        copies.append(found)
        values.update(more)
    return top, copies, values


def config_text(config: Mapping[str, Any]) -> str:
    """Litestream's config file as JSON, which is YAML too (YAML 1.2 is a superset),
    so writing it needs no YAML library: importing PyYAML cost ~8 ms of our import.
    Every string is double-quoted, as a :class:`SecretRef` must be; the characters
    YAML refuses raw are escaped (:func:`_yaml_safe`)."""
    return _yaml_safe(json.dumps(config, ensure_ascii=False, indent=2, default=str)) + "\n"


def yaml_escaped(value: str) -> str:
    """``value`` as the inside of a double-quoted YAML string."""
    return _yaml_safe(json.dumps(value, ensure_ascii=False)[1:-1])


def _yaml_safe(json_text: str) -> str:
    """JSON leaves these characters raw; YAML reads them as line breaks or refuses them:
    escaped, as JSON and YAML both read ``\\uXXXX``."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", json_text)


_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\ufeff]")


def _var(key: Any) -> str:
    return re.sub(r"[^A-Z0-9]", "_", str(key).upper())


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """``text`` as Litestream expands its config (Go's ``os.Expand``: ``$NAME``,
    ``${NAME}``, ``$1``-style specials; a ``$`` before anything else stays)."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "$" or index + 1 == len(text):
            out.append(char)
            index += 1
            continue
        name, width = _shell_name(text[index + 1:])
        if name:
            out.append(environ.get(name, ""))
        elif width == 0:
            out.append("$")
        index += 1 + width
    return "".join(out)


_SPECIAL = "*#$@!?-0123456789"
_NAME = re.compile(r"[A-Za-z0-9_]*")


def _shell_name(rest: str) -> tuple[str, int]:
    """Go's ``getShellName``: (the variable's name, characters used)."""
    if rest[0] == "{":
        if len(rest) > 2 and rest[1] in _SPECIAL and rest[2] == "}":
            return rest[1], 3
        end = rest.find("}")
        if end == -1:
            return "", 1  # bad syntax: "${" is dropped
        return (rest[1:end], end + 1) if end > 1 else ("", 2)
    if rest[0] in _SPECIAL:
        return rest[0], 1
    name = _NAME.match(rest)
    found = name.group() if name else ""
    return found, len(found)
