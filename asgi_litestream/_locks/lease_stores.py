"""The lease stores: the lock object in an S3 bucket, or the lock file in a ``file://``
replica directory. Both make each call of :class:`~.lease.LeaseStore` from three
conditional primitives (create, replace, delete), as upstream's leaser makes it
(the protocol: _locks/conditional.py):

acquire
    GET it (404: none). Held and not expired: refused, naming the holder. Otherwise
    PUT with ``If-None-Match: *`` (there was none) or ``If-Match: <its etag>`` (take an
    expired one over, generation + 1). 412 means another writer won the race: re-read
    it to name them.
renew
    PUT with ``If-Match: <our etag>``, same generation, later expiry; 412: lost.
release
    DELETE with ``If-Match: <our etag>``; 412: it is no longer ours; 404: already gone.
    A server that answers 501 NotImplemented to a conditional DELETE gets what upstream
    also reads as free: our lease rewritten (If-Match) with an expiry in the past.

What S3 servers do with the conditional headers (boto3 1.44, by experiment):

- moto 5.2.5 honours them all: PUT ``If-None-Match: *`` on an existing key and PUT or
  DELETE ``If-Match`` with another etag answer 412 PreconditionFailed and change
  nothing; PUT or DELETE ``If-Match`` on a missing key answers 404 NoSuchKey. Its
  etags are the quoted MD5 of the body (``"c4ca…"``), and it accepts them in If-Match
  quoted or not; we send them back exactly as received, as upstream does.
- s3rver 3 ignores them all: every conditional PUT and DELETE succeeds. A lease on such
  a server excludes nobody; nothing in the protocol can tell.

A ``file://`` replica has the same lease in ``<replica dir>/lock.json`` (upstream has no
file leaser; this one is for one host's tests and the example app). Its etag is the
sha256 of the file's bytes; creating is a hard link of a complete temporary file
(``os.link`` fails if the name exists: atomic), and replacing or deleting is a
compare-and-swap under a short ``flock`` of ``lock.json.mutex`` beside it. It assumes
a local filesystem where ``flock`` and hard links work (not NFS).

The calls block (boto3 is synchronous): run them in a worker thread. An S3 call gives
up after ``timeout`` seconds to connect or to read, and is never retried by botocore: a
retried conditional write whose first answer was lost would see its own write as
someone else's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .._config.urls import redact_url
from .._exceptions import ConfigError
from .._litestream.s3 import s3_client
from .conditional import ConditionalStore, Conflict
from .lease import (
    LOCK_NAME,
    Lease,
    LeaseStore,
    LeaseStoreError,
    check_lease_possible,
    default_owner,
    encode,
    utc_now,
)

logger = logging.getLogger("asgi_litestream")


# -- S3 -------------------------------------------------------------------------------

_KEY_VARIABLES = ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY",
                  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class S3LeaseStore(ConditionalStore):
    """The lease object in an S3 bucket, written with boto3's conditional requests."""

    def __init__(self, bucket: str, path: str, query: Mapping[str, str],
                 env: Mapping[str, str], *, owner: str, timeout: float = 5.0) -> None:
        super().__init__(owner=owner, timeout=timeout)
        self.bucket = bucket
        self.key = f"{path}/{LOCK_NAME}" if path else LOCK_NAME
        self.where = f"s3://{bucket}/{self.key}"
        self._query = dict(query)
        self._env = env  # the service's: rotated keys reach it (the client is rebuilt)
        self._s3: Any = None
        self._keys: tuple[str | None, ...] = ()
        self._botocore: Any = importlib.import_module("botocore.exceptions")

    def _client(self) -> Any:
        keys = tuple(self._env.get(name) for name in _KEY_VARIABLES)
        # Built on first use (loading boto3's models takes a while), again on new keys.
        if self._s3 is None or keys != self._keys:
            self._keys = keys
            self._s3 = s3_client(self._query, self._env, connect_timeout=self.timeout,
                                 read_timeout=self.timeout,
                                 retries={"total_max_attempts": 1})
        return self._s3

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """botocore's errors as Conflict or LeaseStoreError."""
        try:
            yield
        except self._botocore.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.get("Code")
            if status == 412 or code == "PreconditionFailed":
                raise Conflict() from None
            if code in ("NoSuchKey", "NotFound", "404"):  # not NoSuchBucket: an error
                raise Conflict(gone=True) from None
            raise LeaseStoreError(
                f"{action} {self.where}: S3 answered {status} {error.get('Code')}: "
                f"{error.get('Message')}") from exc
        except self._botocore.BotoCoreError as exc:
            raise LeaseStoreError(f"{action} {self.where}: {exc}") from exc

    def _get(self) -> tuple[bytes, str] | None:
        try:
            with self._errors("reading"):
                answer = self._client().get_object(Bucket=self.bucket, Key=self.key)
                return answer["Body"].read(), answer["ETag"]
        except Conflict:
            return None

    def _put(self, data: bytes, etag: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        with self._errors("writing"):
            answer = self._client().put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                               ContentType="application/json", **condition)
        return str(answer["ETag"])

    def _delete(self, lease: Lease) -> None:
        try:
            try:
                with self._errors("deleting"):
                    self._client().delete_object(Bucket=self.bucket, Key=self.key,
                                                 IfMatch=lease.etag)
            except LeaseStoreError as exc:
                if not _not_implemented(exc.__cause__):
                    raise
                # No conditional DELETE on this server: leave the lease expired, which
                # reads as free to us and to upstream.
                self._put(encode(lease.generation, utc_now(), self.owner), lease.etag)
        except Conflict as exc:
            if not exc.gone:
                raise


def _not_implemented(error: BaseException | None) -> bool:
    response: Any = getattr(error, "response", None) or {}
    return bool(response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501
                or response.get("Error", {}).get("Code") == "NotImplemented")


# -- A directory ----------------------------------------------------------------------

class FileLeaseStore(ConditionalStore):
    """The lease file in a ``file://`` replica directory (one host only)."""

    def __init__(self, directory: Path, *, owner: str, timeout: float = 5.0) -> None:
        super().__init__(owner=owner, timeout=timeout)
        self.path = directory / LOCK_NAME
        self.where = str(self.path)
        self._mutex_path = directory / f"{LOCK_NAME}.mutex"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise LeaseStoreError(f"{action} {self.where}: {exc}") from exc

    def _get(self) -> tuple[bytes, str] | None:
        with self._errors("reading"):
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return None
        return data, _digest(data)

    def _put(self, data: bytes, etag: str | None) -> str:
        with self._errors("writing"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f".{LOCK_NAME}.{uuid.uuid4().hex}.tmp")
            try:
                with temp.open("xb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())  # never a torn lock file after a crash
                if etag is None:
                    try:
                        os.link(temp, self.path)
                    except FileExistsError:
                        raise Conflict from None
                else:
                    with self._mutex():
                        if self._current_etag() != etag:
                            raise Conflict
                        os.replace(temp, self.path)
            finally:
                temp.unlink(missing_ok=True)
        return _digest(data)

    def _delete(self, lease: Lease) -> None:
        with self._errors("deleting"), self._mutex():
            current = self._current_etag()
            if current is None:
                return
            if current != lease.etag:
                raise Conflict
            self.path.unlink()

    def _current_etag(self) -> str | None:
        found = self._get()
        return None if found is None else found[1]

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        """The compare-and-swap's exclusion; held for microseconds, so waiting longer
        than the timeout means its holder is stuck."""
        fd = os.open(self._mutex_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LeaseStoreError(
                            f"{self._mutex_path} stayed locked for {self.timeout} s. Fix: "
                            "find the stuck process holding it") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # releases the flock


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lease_store(replica_url: str, env: Mapping[str, str], *, owner: str | None = None,
                timeout: float = 5.0) -> LeaseStore:
    """The lease of ``replica_url``; ``env`` is the Litestream child's environment (S3
    credentials). Nothing is read or written until the first call."""
    check_lease_possible(replica_url)
    owner = owner or default_owner()
    parts = urlsplit(replica_url)
    if parts.scheme == "file":
        if not parts.path.strip("/"):
            raise ConfigError("replica_url", redact_url(replica_url), "a file:// replica needs a "
                              "directory", "write file:///absolute/path/to/replica")
        return FileLeaseStore(Path(unquote(parts.path)), owner=owner, timeout=timeout)
    if not parts.netloc:
        raise ConfigError("replica_url", redact_url(replica_url), "an s3:// replica needs a bucket",
                          "write s3://bucket/path")
    return S3LeaseStore(parts.netloc, parts.path.strip("/"), dict(parse_qsl(parts.query)),
                        env, owner=owner, timeout=timeout)
