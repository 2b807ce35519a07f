"""Replica URLs: validate them, keep their secrets out of files and logs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ._exceptions import ConfigError
from ._options import ENV_PREFIX

# Schemes Litestream 0.5 accepts for a replica URL.
REPLICA_SCHEMES = ("abs", "file", "gs", "nats", "oss", "s3", "sftp", "webdav", "webdavs")
# Query parameters whose values are secrets in some replica URL (abs, sftp, webdav...).
_SECRET_QUERY = re.compile(r"key|secret|password|token|sas|credential", re.IGNORECASE)


def check_replica_url(value: Any, option: str) -> str:
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


def join_url(base: str, leaf: str) -> str:
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


def secret_refs(url: str, index: int) -> tuple[str, dict[str, str]]:
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
