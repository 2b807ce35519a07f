"""A moto server that checks keys (its IAM), for the tests of keys that rotate, are
revoked, or come from a web identity. The shared moto server (conftest's ``s3``) takes
any key, as most tests want.

moto enforces authentication once told to (``POST /moto-api/reset-auth`` with the
number of free requests left, 0): from then on every request must be signed with a
key of an IAM user (or of a role assumed through STS) that still exists, and the
user's policies must allow it. moto does not check a key's Active/Inactive status, so
revoking a key here means deleting it (what AWS does for an inactive key, refusing it
with InvalidAccessKeyId, moto does for a deleted one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import S3, free_port

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
ALLOW_S3 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass(frozen=True)
class Key:
    access_key_id: str
    secret_access_key: str


class IamMoto:
    """A moto server of its own, authentication enforced, with an admin user."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self._server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto (IAM) did not start: see {log}") from None
                time.sleep(0.1)
        # Set up while anything goes: an admin, then no request without a known key.
        iam = self._client("iam", Key("AKIA-SETUP", "setup"))
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=ALLOW_ALL)
        self.admin = _key(iam.create_access_key(UserName="admin"))
        answer = httpx.post(self.endpoint + "/moto-api/reset-auth", content=b"0",
                            headers={"Content-Type": "text/plain"})
        answer.raise_for_status()

    def _client(self, service: str, key: Key | None = None) -> Any:
        import boto3

        key = key or self.admin
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key.access_key_id,
                            aws_secret_access_key=key.secret_access_key)

    def user_with_keys(self, count: int = 2) -> tuple[str, list[Key]]:
        """A new user allowed everything in S3, and ``count`` keys of its own."""
        iam, name = self._client("iam"), "app-" + uuid.uuid4().hex[:8]
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=ALLOW_S3)
        return name, [_key(iam.create_access_key(UserName=name)) for _ in range(count)]

    def revoke(self, user: str, key: Key) -> None:
        """Deactivate the key (as an operator would), then delete it (what moto checks)."""
        iam = self._client("iam")
        iam.update_access_key(UserName=user, AccessKeyId=key.access_key_id,
                              Status="Inactive")
        iam.delete_access_key(UserName=user, AccessKeyId=key.access_key_id)

    def bucket(self, key: Key) -> S3:
        """A fresh bucket, and an S3 record that signs with ``key``."""
        store = S3(endpoint=self.endpoint, bucket="bk-" + uuid.uuid4().hex[:12],
                   access_key_id=key.access_key_id, secret_access_key=key.secret_access_key)
        self._client("s3").create_bucket(Bucket=store.bucket)
        return store

    def close(self) -> None:
        self._server.terminate()
        self._server.wait(10)
        self._log.close()


def _key(answer: dict[str, Any]) -> Key:
    found = answer["AccessKey"]
    return Key(found["AccessKeyId"], found["SecretAccessKey"])
