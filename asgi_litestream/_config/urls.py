"""Replica URLs: validate them, keep their secrets out of files and logs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .._exceptions import ConfigError
from .options import ENV_PREFIX

# Schemes Litestream 0.5 accepts for a replica URL.
REPLICA_SCHEMES = ("abs", "file", "gs", "nats", "oss", "s3", "sftp", "webdav", "webdavs")
# Query parameters whose values are secrets in some replica URL (abs, sftp, webdav...).
_SECRET_QUERY = re.compile(r"key|secret|password|token|sas|credential", re.IGNORECASE)


def check_replica_url(value: Any, option: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(option, value, "must be a non-empty URL string",
                          "pass e.g. 's3://bucket/app' or 'file:///var/backups/app'")
    if value[:9].lower() == "s3://arn:":
        return _check_access_point(value, option)
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
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        # The host as written: urlsplit's hostname is lower-cased, Litestream's is not.
        bucket, on_aws = s3_bucket(parts.netloc.rpartition("@")[2])
        problem = bucket_problem(bucket, on_aws=on_aws and not query.get("endpoint"),
                                 path_style=query.get("forcePathStyle") == "true")
        if problem is not None:
            raise ConfigError(option, redact_url(value), *problem)
        # Without a region Litestream makes a network call at start-up to find it,
        # which a local S3 emulator (and some proxies) cannot answer.
        if "endpoint" in query and "region" not in query:
            query["region"] = "us-east-1"
            url = urlunsplit(parts._replace(query=urlencode(query, safe=":/")))
    return url


def _check_access_point(value: str, option: str) -> str:
    """``s3://arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME[/path]``: an S3 access point,
    which Litestream parses by hand (the ARN's colons are no host and port)."""
    arn = value[5:].split("?", 1)[0]
    marker = arn.lower().find(":accesspoint/")
    if marker < 0 or not arn[marker + len(":accesspoint/"):].split("/", 1)[0]:
        raise ConfigError(option, redact_url(value), "is an ARN but not an S3 access point's",
                          "write s3://arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/path")
    if "$" in value:
        raise ConfigError(option, redact_url(value),
                          "contains '$', which Litestream expands as an environment variable",
                          "remove the '$'")
    return value


# -- S3 bucket names ----------------------------------------------------------------------

# Hosts that name a provider's endpoint beside the bucket, as Litestream 0.5's
# s3.ParseHost reads them (first match wins). The AWS one keeps AWS's naming rules.
_AWS_HOST = re.compile(r"^(.+)\.s3(?:\.([^.]+))?\.amazonaws\.com$")
_PROVIDER_HOSTS = (
    re.compile(r"^(?:(.+)\.)?([^.]+)\.digitaloceanspaces.com$"),
    re.compile(r"^(?:(.+)\.)?s3.([^.]+)\.backblazeb2.com$"),
    re.compile(r"^(?:(.+)\.)?s3.filebase.com$"),
    re.compile(r"^(?:(.+)\.)?s3.([^.]+)\.scw\.cloud$"),
)
# What no S3-compatible store accepts in a bucket name.
_ANY_STORE = re.compile(r"[A-Za-z0-9._-]+")
_AWS_CHARACTERS = re.compile(r"[a-z0-9.-]+")
_AWS_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_NAME_FIX = "use the bucket's real name"


def s3_bucket(host: str) -> tuple[str, bool]:
    """(the bucket, whether it is on AWS) as Litestream 0.5 reads an ``s3://`` URL's host:
    ``bucket``, ``bucket.s3.REGION.amazonaws.com``, a provider's host
    (``bucket.REGION.digitaloceanspaces.com``...), or ``bucket.host:port``."""
    if ":" in host and ".com" not in host:
        bucket, dot, _ = host.partition(".")
        return (bucket if dot else ""), False
    found = _AWS_HOST.match(host)
    if found:
        return found.group(1), True
    for provider in _PROVIDER_HOSTS:
        found = provider.match(host)
        if found:
            return found.group(1) or "", False
    return host, True


def bucket_problem(bucket: str, *, on_aws: bool, path_style: bool = False
                   ) -> tuple[str, str] | None:
    """(problem, fix) when ``bucket`` cannot name an S3 bucket, else None.

    On AWS (no ``endpoint``) AWS's rules for general purpose buckets, as far as they
    bind a bucket that exists (the reserved *suffixes* are left alone: an access point's
    alias ends in ``-s3alias`` and is used as a bucket name). With ``forcePathStyle=true``
    the capitals and underscores of a bucket made before March 2018 are allowed. Any
    other store: only what none accepts."""
    if not bucket:
        return ("has no bucket: Litestream reads this host as the storage's address, "
                "not as a bucket", "write s3://BUCKET/path (a server of your own goes in "
                "?endpoint=http://HOST:PORT)")
    if len(bucket) < 3:
        return "S3 bucket names need >= 3 characters", _NAME_FIX
    strange = sorted(set(re.sub(r"[A-Za-z0-9._-]", "", bucket)))
    if strange:
        return (f"the bucket name {bucket!r} holds {', '.join(map(repr, strange))}, which no "
                "S3 bucket name can", _NAME_FIX + ": letters, digits, dots and hyphens")
    if not on_aws:
        return None
    if not _AWS_CHARACTERS.fullmatch(bucket) and not path_style:
        return (f"the bucket name {bucket!r} has capitals or '_': S3 bucket names are "
                "lowercase letters, digits, dots and hyphens",
                _NAME_FIX + " (a bucket made in us-east-1 before March 2018 with such a "
                "name: add forcePathStyle=true)")
    if len(bucket) > (255 if path_style else 63):
        return (f"the bucket name is {len(bucket)} characters long; S3 allows 3 to 63",
                _NAME_FIX)
    if not (bucket[0].isalnum() and bucket[-1].isalnum()):
        return (f"the bucket name {bucket!r} must begin and end with a letter or digit",
                _NAME_FIX)
    if ".." in bucket:
        return f"the bucket name {bucket!r} has two dots in a row", _NAME_FIX
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        return (f"{bucket!r} is an IP address, not a bucket name",
                "write s3://BUCKET/path, and the server as ?endpoint=http://ADDRESS:PORT")
    reserved = next((p for p in _AWS_RESERVED_PREFIXES if bucket.startswith(p)), None)
    if reserved is not None:
        return (f"the bucket name {bucket!r} starts with {reserved!r}, a prefix S3 "
                "reserves", _NAME_FIX)
    return None


def check_replica_config(config: Mapping[str, Any], option: str, shown: str,
                         database: str) -> None:
    """The S3 bucket of a replica as a user's litestream.yml writes it (``url:`` or
    ``type: s3`` + ``bucket:``); a ``$VAR`` is Litestream's to expand, so left alone."""
    url = config.get("url")
    if isinstance(url, str):
        if not url.lower().startswith("s3://") or "$" in url or url[:9].lower() == "s3://arn:":
            return
        try:
            parts = urlsplit(url)
        except ValueError:
            return  # Litestream says what is wrong with it
        query = dict(parse_qsl(parts.query))
        bucket, on_aws = s3_bucket(parts.netloc.rpartition("@")[2])
        endpoint = query.get("endpoint") or config.get("endpoint")
        path_style = query.get("forcePathStyle") == "true"
    elif config.get("type") == "s3" and isinstance(config.get("bucket"), str):
        bucket, on_aws = str(config["bucket"]), True
        if "$" in bucket:
            return
        endpoint = config.get("endpoint")
        path_style = config.get("force-path-style") is True
    else:
        return
    problem = bucket_problem(bucket, on_aws=on_aws and not endpoint, path_style=path_style)
    if problem is not None:
        raise ConfigError(option, redact_url(shown), f"the replica of {database}: "
                          f"{problem[0]}", problem[1])


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
