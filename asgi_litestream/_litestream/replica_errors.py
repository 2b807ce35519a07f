"""Why a replica could not be reached, and whether retrying can help: one table for
restore on boot, a follower's first restore, the lease, verify and the command line.

*Permanent* failures are mistakes no retry mends (no such bucket, a refused key, no
credentials anywhere, an invalid bucket name, an executable that is not Litestream):
the caller gives up at once and names the cause and the fix. *Transient* ones
(refused or reset connections, timeouts, 5xx, throttling) are retried. An error
nobody recognises counts as transient, and its text is shown at every attempt.

The texts are Litestream 0.5.17's (the AWS, Google and Azure SDKs it embeds), measured
against moto and refused ports, and boto3's for the lease.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._exceptions import LitestreamError, RestoreError

__all__ = ["ReplicaFailure", "classify", "error_line", "explain", "refused_keys"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFailure:
    """One failure to reach a replica, judged."""

    permanent: bool
    cause: str  # in plain words: "the bucket does not exist"
    fix: str
    detail: str  # the error as received (the caller scrubs secrets before)
    recognised: bool = True  # False: no rule matched (counted as transient)

    @property
    def kind(self) -> str:
        return "permanent" if self.permanent else "transient"

    def describe(self) -> str:
        """``cause (detail)``, or the bare detail when nothing was recognised."""
        return f"{self.cause} ({self.detail})" if self.recognised else self.detail


# -- the table: first match wins; permanent rules come first, because a credential
# chain's text can also mention a refused connection (to the metadata address).

_CREDENTIALS_FIX = (
    "pass access_key_id and secret_access_key (env ASGI_LITESTREAM_ACCESS_KEY_ID and "
    "ASGI_LITESTREAM_SECRET_ACCESS_KEY), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "or AWS_PROFILE, or give the pod a role (IRSA, EKS pod identity, ECS task role, "
    "instance profile)")

_UNKNOWN_KEY = "the access key id is not known to the storage"
_WRONG_SECRET = "the secret access key does not match the access key id"
_EXPIRED_TOKEN = "the session token is expired or invalid"
_DENIED = "access denied: the credentials may not use this bucket or path"
_NO_CREDENTIALS = ("no credentials: none in the options or the environment, no profile, "
                   "no web identity, container or instance role")
# The refusals of the keys themselves: what new keys mend (see refused_keys).
_KEY_CAUSES = frozenset({_UNKNOWN_KEY, _WRONG_SECRET, _EXPIRED_TOKEN, _DENIED,
                         _NO_CREDENTIALS})

_PERMANENT: tuple[tuple[str, str, str], ...] = (
    (r"NoSuchBucket|specified bucket does not exist|bucket doesn't exist|ContainerNotFound",
     "the bucket does not exist",
     "create it, or correct the bucket name in replica_url (and its region or endpoint)"),
    (r"InvalidBucketName|bucket name is not valid",
     "the bucket name is not a valid bucket name",
     "use the bucket's real name (S3: 3-63 lowercase letters, digits, dots and hyphens, "
     "starting and ending with a letter or digit)"),
    (r"InvalidAccessKeyId",
     _UNKNOWN_KEY,
     "check the key id (access_key_id, env ASGI_LITESTREAM_ACCESS_KEY_ID, or "
     "AWS_ACCESS_KEY_ID / LITESTREAM_ACCESS_KEY_ID) and that the endpoint is the storage "
     "the key belongs to"),
    (r"SignatureDoesNotMatch",
     _WRONG_SECRET,
     "check the secret (secret_access_key, env ASGI_LITESTREAM_SECRET_ACCESS_KEY, or "
     "AWS_SECRET_ACCESS_KEY / LITESTREAM_SECRET_ACCESS_KEY)"),
    (r"ExpiredToken|InvalidToken|TokenRefreshRequired",
     _EXPIRED_TOKEN,
     "renew the temporary credentials (AWS_SESSION_TOKEN), or use a role that renews "
     "them itself"),
    (r"AccessDenied|Access Denied|AllAccessDisabled|AuthorizationPermissionMismatch"
     r"|AuthorizationFailure|StatusCode: 403\b|googleapi: Error 403",
     _DENIED,
     "grant them s3:ListBucket on the bucket and s3:GetObject, s3:PutObject and "
     "s3:DeleteObject on the path (or the storage's equivalents), or use credentials "
     "that have them"),
    (r"no EC2 IMDS role found|no valid credential sources|NoCredentialProviders"
     r"|Unable to locate credentials|NoCredentialsError",
     _NO_CREDENTIALS,
     _CREDENTIALS_FIX),
    (r"could not find default credentials",
     "no Google Cloud credentials",
     "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run with a "
     "service account (workload identity)"),
    (r"DefaultAzureCredential: failed to acquire a token",
     "no Azure credentials",
     "put the account key in the replica URL's password or AZURE_STORAGE_ACCOUNT_KEY, "
     "or give the pod a managed or workload identity"),
    (r"region '[^']*' is wrong|PermanentRedirect|IllegalLocationConstraint",
     "the bucket is in another region than the one asked",
     "set the bucket's region in replica_url (?region=...)"),
    (r"StatusCode: 401\b|401 Unauthorized|unable to authenticate|ssh: handshake failed",
     "the storage refused the credentials",
     "check the user and password (or key) in replica_url"),
    (r"x509: |certificate signed by unknown authority|certificate is not valid",
     "the storage's TLS certificate is not trusted here",
     "point SSL_CERT_FILE at the CA bundle that signed it (or use skipVerify=true for a "
     "test server only)"),
    (r"unable to add custom RootCAs",
     "Litestream cannot load a custom CA bundle (upstream issue #639)",
     "remove ca_bundle from the AWS profile and AWS_CA_BUNDLE; use SSL_CERT_FILE instead"),
    (r"bucket required for s3 replica|account name is required|unsupported replica URL scheme"
     r"|replica url scheme required|cannot specify url &",
     "Litestream refused the replica's settings",
     "correct replica_url (or the replica in config_path) as the error says"),
    (r"permission denied",
     "permission denied on the replica's files",
     "let the app's user read and write the replica's folder (or bucket path)"),
    (r"flag provided but not defined|exec format error|not an executable|is not Litestream",
     "the executable is not a Litestream this library can run",
     "install Litestream 0.5.17 (pip install \"asgi-litestream[bin]\") or point bin_path "
     "(env ASGI_LITESTREAM_BIN_PATH) at it"),
)

_TRANSIENT: tuple[tuple[str, str], ...] = (
    (r"SlowDown|Throttl|TooManyRequests|StatusCode: 429\b|RequestLimitExceeded|rate exceeded",
     "the storage is throttling requests"),
    (r"StatusCode: 5\d\d\b|InternalError|ServiceUnavailable|Bad ?Gateway|Gateway ?Timeout"
     r"|\b50[0234] ",
     "the storage answered with a server error (5xx)"),
    (r"connection refused", "the connection was refused (the storage is down, or the "
     "host or port is wrong)"),
    (r"connection reset|broken pipe|unexpected EOF|\bEOF\b|server closed|connection aborted",
     "the connection was cut"),
    (r"timeout|timed out|deadline exceeded|no answer within|no TCP connection",
     "no answer in time"),
    (r"no such host|name or service not known|temporary failure in name resolution"
     r"|name resolution|nodename nor servname|getaddrinfo",
     "the host name does not resolve (DNS)"),
    (r"network is unreachable|no route to host|host is unreachable",
     "the network is unreachable"),
    (r"could not connect|cannot connect|failed to connect",
     "the storage cannot be connected to"),
)
_RETRY_FIX = ("check that the storage is up and reachable from here; a retry may succeed "
              "(restore on boot retries until restore_timeout)")

# The replica was read, and what it holds does not decode: not a failure to reach it.
_DAMAGED = re.compile(r"\bdecode\b|checksum|corrupt|malformed|invalid ltx", re.IGNORECASE)
# Request ids say nothing to a reader and make every line different.
_NOISE = re.compile(r"RequestID: [^,]*, HostID: [^,]*, ")

_PERMANENT_RULES = tuple((re.compile(p, re.IGNORECASE), c, f) for p, c, f in _PERMANENT)
_TRANSIENT_RULES = tuple((re.compile(p, re.IGNORECASE), c) for p, c in _TRANSIENT)


def classify(error: str | BaseException) -> ReplicaFailure:
    """Judge one failure to reach a replica: Litestream's error text, or an exception
    (botocore's, an OSError, a TimeoutError)."""
    text = error if isinstance(error, str) else _exception_text(error)
    text = _NOISE.sub("", text).strip()
    for pattern, cause, fix in _PERMANENT_RULES:
        if pattern.search(text):
            return ReplicaFailure(permanent=True, cause=cause, fix=fix, detail=text)
    if not _DAMAGED.search(text):  # a cut file's "unexpected EOF" is not a cut connection
        for pattern, cause in _TRANSIENT_RULES:
            if pattern.search(text):
                return ReplicaFailure(permanent=False, cause=cause, fix=_RETRY_FIX,
                                      detail=text)
    return ReplicaFailure(permanent=False, cause="an error not recognised (retried)",
                          fix=_RETRY_FIX, detail=text or "no error text",
                          recognised=False)


def refused_keys(text: str) -> ReplicaFailure | None:
    """The failure when ``text`` (a running Litestream's error line) says the storage
    refuses the keys themselves: an unknown key id, a wrong secret, an expired token,
    access denied, no credentials at all. None for anything else (a missing bucket,
    a cut connection...), which new keys would not mend."""
    failure = classify(text)
    return failure if failure.permanent and failure.cause in _KEY_CAUSES else None


def error_line(output: str) -> str:
    """The line that says what went wrong in a Litestream command's output: its last
    ``Error: ...`` line with the lines that continue it (Azure lists every credential
    it tried on lines of their own), else the last line."""
    lines = [line.rstrip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    starts = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    if not starts:
        return lines[-1]
    first = starts[-1]
    return "; ".join(line.strip() for line in lines[first:first + 8])


def _exception_text(error: BaseException) -> str:
    """botocore's ClientError by its code (duck-typed: botocore is optional), any other
    exception as ``Type: message``."""
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        found = response["Error"]
        return (f"S3 answered StatusCode: {status}, {found.get('Code')}: "
                f"{found.get('Message')}")
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def explain(error: LitestreamError) -> str:
    """An error's message, with the cause in plain words and the fix when it is a
    replica that could not be read and the message does not say them yet."""
    message = str(error)
    if isinstance(error, RestoreError) and "Fix:" not in message:
        failure = classify(message)
        if failure.recognised:
            return f"{message}. {failure.cause[0].upper()}{failure.cause[1:]}. Fix: {failure.fix}"
    return message
