"""The one table that says whether a failure to reach a replica is permanent or
transient, on the texts Litestream 0.5.17 and boto3 really print (measured against moto,
refused ports and a 5xx server; request ids shortened)."""

from __future__ import annotations

import pytest

from asgi_litestream._litestream.replica_errors import classify, error_line, refused_keys

_S3 = "Error: operation error S3: ListObjectsV2, https response error StatusCode: "
_IDS = "RequestID: OmNXb0TQ4Lp9G5V9, HostID: 9Gjjt1m+cjU4OPvX9O9/8Ru=, "
_IMDS = ("get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS "
         "role found, operation error ec2imds: GetMetadata, access disabled to EC2 IMDS via "
         'client option, or "AWS_EC2_METADATA_DISABLED" environment variable')

PERMANENT = [
    (_S3 + "404, " + _IDS + "NoSuchBucket: The specified bucket does not exist",
     "the bucket does not exist"),
    (_S3 + "403, " + _IDS + "api error AccessDenied: Access Denied",
     "access denied"),
    (_S3 + "403, " + _IDS + "api error InvalidAccessKeyId: The AWS Access Key Id you "
     "provided does not exist in our records.", "access key id is not known"),
    (_S3 + "403, " + _IDS + "api error SignatureDoesNotMatch: The request signature we "
     "calculated does not match the signature you provided. Check your key and signing "
     "method.", "secret access key does not match"),
    ("Error: operation error S3: ListObjectsV2, " + _IMDS, "no credentials"),
    ("Error: s3: cannot lookup bucket region: operation error S3: GetBucketLocation, " + _IMDS,
     "no credentials"),
    ("Error: failed to create GCS client (bucket: some-bucket): dialing: google: could not "
     "find default credentials. See https://cloud.google.com/docs/authentication/external/"
     "set-up-adc for more information", "no Google Cloud credentials"),
    ("Error: abs: cannot list blobs: DefaultAzureCredential: failed to acquire a token.; "
     "Attempted credentials:; ManagedIdentityCredential: Get \"http://169.254.169.254/"
     "metadata/identity/oauth2/token\": dial tcp 127.0.0.1:9: connect: connection refused",
     "no Azure credentials"),
    ("Error: bucket required for s3 replica", "refused the replica's settings"),
    ("S3 answered StatusCode: 400, InvalidBucketName: The specified bucket is not valid.",
     "not a valid bucket name"),
]

TRANSIENT = [
    ("cannot connect to 127.0.0.1:48405: Connection refused", "connection was refused"),
    ("Error: webdav: cannot connect to server: Options \"http://127.0.0.1:9/\": dial tcp "
     "127.0.0.1:9: connect: connection refused", "connection was refused"),
    ("Error: operation error S3: ListObjectsV2, exceeded maximum number of attempts, 10, "
     "https response error StatusCode: 500, RequestID: r1, HostID: , api error "
     "InternalError: msg for InternalError", "server error (5xx)"),
    (_S3 + "503, RequestID: r1, HostID: , api error SlowDown: Please reduce your request rate",
     "throttling"),
    (_S3 + "429, RequestID: r1, HostID: , api error TooManyRequests: slow down",
     "throttling"),
    ("no answer within 5s (unreachable, or a hung endpoint)", "no answer in time"),
    ("no TCP connection to 10.1.2.3:443 within 5s", "no answer in time"),
    ("cannot connect to minio.invalid:443: Name or service not known", "does not resolve"),
    ('Error: operation error S3: ListObjectsV2, https response error: Get "http://x/": '
     "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
     "connection was cut"),
]


@pytest.mark.parametrize(("text", "cause"), PERMANENT)
def test_what_no_retry_mends_is_permanent(text: str, cause: str) -> None:
    """No such bucket, refused or missing credentials, an invalid name, a refused
    config: permanent, with a cause in plain words and a fix."""
    failure = classify(text)
    assert failure.permanent and failure.kind == "permanent"
    assert cause in failure.cause
    assert failure.fix
    assert "RequestID" not in failure.detail  # noise a reader does not need


@pytest.mark.parametrize(("text", "cause"), TRANSIENT)
def test_outages_are_transient(text: str, cause: str) -> None:
    """Refused or reset connections, timeouts, 5xx and throttling: retried."""
    failure = classify(text)
    assert not failure.permanent and failure.kind == "transient"
    assert failure.recognised
    assert cause in failure.cause


@pytest.mark.parametrize("text", [
    "Error: something nobody has seen before",
    # A damaged replica: read, but its files do not decode. Not a cut connection.
    "Error: decode database: decode page 1: read page header 0: read compressed data: "
    "unexpected EOF",
    "Error: invalid ltx file: checksum mismatch",
    "",
])
def test_an_unknown_error_is_transient_and_kept_verbatim(text: str) -> None:
    """Anything the table does not know is retried, and shown as it was said."""
    failure = classify(text)
    assert not failure.permanent
    assert not failure.recognised
    assert failure.describe() == (text or "no error text")


def test_a_credential_chain_that_mentions_a_refused_connection_is_still_permanent() -> None:
    """Azure's chain tried the metadata address and was refused: still no credentials."""
    text = ("Error: abs: cannot list blobs: DefaultAzureCredential: failed to acquire a "
            "token.; ManagedIdentityCredential: dial tcp 169.254.169.254:80: connect: "
            "connection refused")
    assert classify(text).permanent


def test_boto3_errors_are_judged_by_their_code() -> None:
    """The lease's errors (boto3): a ClientError by its code, the rest by their text."""
    botocore = pytest.importorskip("botocore.exceptions")
    missing = botocore.ClientError(
        {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"},
         "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
    assert classify(missing).permanent
    assert "the bucket does not exist" in classify(missing).cause
    denied = botocore.ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
         "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    assert classify(denied).permanent
    assert classify(botocore.NoCredentialsError()).permanent
    throttled = botocore.ClientError(
        {"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"},
         "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
    assert not classify(throttled).permanent
    refused = botocore.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b")
    assert not classify(refused).permanent
    assert classify(refused).recognised


def test_exceptions_from_sockets_are_transient() -> None:
    """OSErrors of a connection, and a bare TimeoutError, are retried."""
    assert classify(ConnectionRefusedError(111, "Connection refused")).cause.startswith(
        "the connection was refused")
    assert classify(TimeoutError()).cause == "no answer in time"
    assert not classify(ConnectionResetError(104, "Connection reset by peer")).permanent


def test_error_line_keeps_the_error_and_its_continuation() -> None:
    """Litestream's last ``Error:`` line, with the lines that continue it (Azure lists
    each credential it tried on a line of its own); else the last line."""
    output = ('{"level":"WARN","msg":"sftp host key not verified"}\n'
              "Error: abs: cannot list blobs: DefaultAzureCredential: failed to acquire a "
              "token.\nAttempted credentials:\n\tEnvironmentCredential: missing "
              "AZURE_TENANT_ID\n")
    assert error_line(output) == (
        "Error: abs: cannot list blobs: DefaultAzureCredential: failed to acquire a token.; "
        "Attempted credentials:; EnvironmentCredential: missing AZURE_TENANT_ID")
    assert error_line("one\ntwo\n") == "two"
    assert error_line("  \n") == ""


@pytest.mark.parametrize("text", [
    "api error InvalidAccessKeyId: The AWS Access Key Id you provided does not exist",
    "api error SignatureDoesNotMatch: The request signature we calculated does not match",
    "api error ExpiredToken: The provided token has expired.",
    "https response error StatusCode: 403, api error AccessDenied: Access Denied",
])
def test_refusals_of_the_keys_are_what_new_keys_mend(text: str) -> None:
    found = refused_keys(text)
    assert found is not None and found.permanent


@pytest.mark.parametrize("text", [
    "api error NoSuchBucket: The specified bucket does not exist",
    "dial tcp 127.0.0.1:9: connect: connection refused",
    "something nobody has seen",
])
def test_other_failures_are_not_refused_keys(text: str) -> None:
    assert refused_keys(text) is None
