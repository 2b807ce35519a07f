"""The lease in an S3 replica (moto): the same contract as a file:// replica, upstream's
lock object honoured, and an unreachable or hung S3 failing the call, never hanging."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest

from asgi_litestream._locks.lease import LeaseStore, LeaseStoreError
from asgi_litestream._locks.lease_stores import S3LeaseStore, lease_store
from tests import lease_contract as contract
from tests.helpers import S3, free_port

pytestmark = pytest.mark.integration


def store(s3: S3, owner: str, path: str = "app") -> LeaseStore:
    return lease_store(s3.url(path), s3.env(), owner=owner)


def bucket(s3: S3) -> Any:
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                        aws_access_key_id=s3.access_key_id,
                        aws_secret_access_key=s3.secret_access_key)


def test_one_holder_at_a_time(s3: S3) -> None:
    """A second owner is refused while the lease is held, told who holds it and until when."""
    contract.one_holder_at_a_time(store(s3, "a:1"), store(s3, "b:2"))


def test_renewal_moves_only_the_expiry(s3: S3) -> None:
    """Renewing keeps the generation, moves the expiry, and outdates the old etag."""
    contract.renewal_moves_only_the_expiry(store(s3, "a:1"))


def test_takeover_only_after_expiry(s3: S3) -> None:
    """An expired lease is taken over with generation + 1; its old holder has lost it."""
    contract.takeover_only_after_expiry(store(s3, "a:1"), store(s3, "b:2"))


def test_take_over_from_a_known_gone_holder(s3: S3) -> None:
    """An unexpired lease is taken over only while it is the one seen."""
    contract.take_over_from_a_known_gone_holder(store(s3, "a:1"), store(s3, "b:2"))


def test_release_frees_at_once(s3: S3) -> None:
    """A released lease (conditional DELETE) is free at once; releasing twice is harmless."""
    contract.release_frees_at_once(store(s3, "a:1"), store(s3, "b:2"))


def test_exactly_one_of_many_wins(s3: S3) -> None:
    """Threads racing for an absent lease (If-None-Match: *): exactly one wins."""
    contract.exactly_one_wins_a_race([store(s3, f"w:{i}") for i in range(8)], expired=False)


def test_upstreams_lock_object_is_honoured(s3: S3) -> None:
    """An object in upstream's exact JSON is held until it expires, then taken over with
    its generation + 1."""
    client = bucket(s3)

    def put(data: bytes) -> None:
        client.put_object(Bucket=s3.bucket, Key="app/lock.json", Body=data)

    contract.upstream_lock_is_honoured(put, store(s3, "a:1"))


def test_the_object_is_upstreams_key_and_json(s3: S3) -> None:
    """The lease is <replica path>/lock.json (lock.json at the bucket's root without a
    path), holding upstream's fields."""
    in_app = store(s3, "host:1").acquire(60)
    at_root = store(s3, "host:2", path="").acquire(60)
    client = bucket(s3)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert sorted(keys) == ["app/lock.json", "lock.json"]
    for key, lease in (("app/lock.json", in_app), ("lock.json", at_root)):
        answer = client.get_object(Bucket=s3.bucket, Key=key)
        fields = json.loads(answer["Body"].read())
        assert fields == {"generation": 1, "owner": lease.owner,
                          "expires_at": fields["expires_at"]}
        assert answer["ETag"] == lease.etag


def test_a_missing_bucket_is_an_error_not_a_free_lease(s3: S3) -> None:
    """NoSuchBucket (a 404 too) is a LeaseStoreError, never read as "no lease"."""
    url = s3.url().replace(f"s3://{s3.bucket}/", f"s3://{s3.bucket}-gone/")
    with pytest.raises(LeaseStoreError, match="NoSuchBucket"):
        lease_store(url, s3.env(), owner="a:1").acquire(60)


def test_a_server_without_conditional_delete_is_released_by_an_expired_write(
        s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where DELETE with If-Match answers 501, release leaves the lease expired (free to
    upstream too), and another owner takes it at once."""
    mine = store(s3, "a:1")
    assert isinstance(mine, S3LeaseStore)
    lease = mine.acquire(60)

    def refuse(**kwargs: Any) -> None:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "NotImplemented", "Message": "no If-Match on DELETE"},
             "ResponseMetadata": {"HTTPStatusCode": 501}}, "DeleteObject")

    monkeypatch.setattr(mine._client(), "delete_object", refuse)
    mine.release(lease)
    left = mine.read()
    assert left is not None and left.expired() and left.generation == lease.generation
    taken = store(s3, "b:2").acquire(60)
    assert (taken.generation, taken.owner) == (lease.generation + 1, "b:2")


@pytest.mark.timeout(30)
def test_an_unreachable_s3_is_a_store_error(s3: S3) -> None:
    """Nothing listening at the endpoint: every call raises LeaseStoreError."""
    url = s3.url().replace(s3.endpoint, f"http://127.0.0.1:{free_port()}")
    gone = lease_store(url, s3.env(), owner="a:1", timeout=1)
    lease = store(s3, "a:1").acquire(60)  # a real lease, to renew and release
    for call in (gone.read, lambda: gone.acquire(60), lambda: gone.renew(lease, 60),
                 lambda: gone.release(lease)):
        with pytest.raises(LeaseStoreError, match="Could not connect"):
            call()


@pytest.fixture
def hung_listener() -> Iterator[socket.socket]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


@pytest.mark.timeout(30)
def test_a_hung_s3_fails_the_call_instead_of_hanging(
        s3: S3, hung_listener: socket.socket) -> None:
    """An S3 that never answers: the call gives up with LeaseStoreError (read timeout)
    after one request, never retried (a retried conditional write could see its own
    write as another's)."""
    url = s3.url().replace(s3.endpoint, f"http://127.0.0.1:{hung_listener.getsockname()[1]}")
    with pytest.raises(LeaseStoreError, match="Read timeout"):
        lease_store(url, s3.env(), owner="a:1", timeout=0.5).acquire(60)
    hung_listener.setblocking(False)
    connections = []
    with contextlib.suppress(BlockingIOError):
        while True:
            connections.append(hung_listener.accept()[0])
    for connection in connections:
        connection.close()
    assert len(connections) == 1
