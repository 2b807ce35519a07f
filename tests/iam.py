"""A moto server that checks keys (its IAM), for the tests of keys that rotate, are
revoked, or come from a web identity or a container's role. The shared moto server
(conftest's ``s3``) takes any key, as most tests want.

moto enforces authentication once told to (``POST /moto-api/reset-auth`` with the
number of free requests left, 0): from then on every request must be signed with a
key of an IAM user (or of a role assumed through STS) that still exists, and the
user's policies must allow it. moto does not check a key's Active/Inactive status, so
revoking a key here means deleting it (what AWS does for an inactive key, refusing it
with InvalidAccessKeyId, moto does for a deleted one).

Its STS hands out temporary keys for a role (``AssumeRole``, signed;
``AssumeRoleWithWebIdentity``, unsigned as on AWS, any token text taken), and S3 then
checks them against the role's policies.
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
ACCOUNT = "123456789012"  # moto's default account

# A web identity's session lasts this long here (seconds), so that a test outlives a
# few of them and shows both SDKs coming back for new keys.
WEB_IDENTITY_SECONDS = 3

# moto's server with three changes, each to behave as AWS does:
# - AssumeRoleWithWebIdentity is taken unsigned (on AWS the token is the proof). moto
#   5.2, once it checks keys, fails it with a 500: it reads the Authorization header.
# - The keys of a session that ran out (1 s of clock skew allowed) are refused
#   (InvalidToken; AWS says ExpiredToken). moto never checks a session's expiry.
# - A session's key id (ASIA...) signing without its session token is refused
#   (InvalidAccessKeyId). moto took it as a user's key, the token unchecked.
# Its first argument: how long a web identity's session lasts, at most.
_SERVER = """
import datetime
import sys

from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.utils import utcnow
from moto.iam import access_control
from moto.server import main
from moto.sts.models import STSBackend, sts_backends

SECONDS = int(sys.argv.pop(1))
GRACE = datetime.timedelta(seconds=1)

checked = ActionAuthenticatorMixin._authenticate_and_authorize_action

def authenticate(self, iam_request_cls, resource="*"):
    if (self._get_action() == "AssumeRoleWithWebIdentity"
            and "Authorization" not in self.headers):
        return None
    return checked(self, iam_request_cls, resource)

exchange = STSBackend.assume_role_with_web_identity

def assume_role_with_web_identity(self, **kwargs):
    kwargs["duration"] = min(kwargs["duration"], SECONDS)
    return exchange(self, **kwargs)

known = access_control.AssumedRoleAccessKey.__init__

def unexpired(self, account_id, partition, access_key_id, headers):
    known(self, account_id, partition, access_key_id, headers)
    session = sts_backends[account_id][partition].get_assumed_role_from_access_key(
        access_key_id)
    if session is not None and utcnow() > session.expiration + GRACE:
        raise access_control.CreateAccessKeyFailure(reason="InvalidToken")

user_key = access_control.IAMUserAccessKey.__init__

def with_token(self, account_id, partition, access_key_id, headers):
    if access_key_id.startswith("ASIA"):  # here only when no token was sent
        raise access_control.CreateAccessKeyFailure(reason="InvalidId")
    user_key(self, account_id, partition, access_key_id, headers)

ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate
access_control.IAMUserAccessKey.__init__ = with_token
STSBackend.assume_role_with_web_identity = assume_role_with_web_identity
access_control.AssumedRoleAccessKey.__init__ = unexpired
main(sys.argv[1:])
"""


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
            [sys.executable, "-c", _SERVER, str(WEB_IDENTITY_SECONDS), "-H", "127.0.0.1",
             "-p", str(self.port)],
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
        self._sts: Any = None
        answer = httpx.post(self.endpoint + "/moto-api/reset-auth", content=b"0",
                            headers={"Content-Type": "text/plain"})
        answer.raise_for_status()

    def _client(self, service: str, key: Key | None = None, **options: Any) -> Any:
        import boto3

        key = key or self.admin
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key.access_key_id,
                            aws_secret_access_key=key.secret_access_key, **options)

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

    def role(self) -> str:
        """A new role allowed everything in S3, that a web identity (any token, to moto)
        and the admin (AssumeRole) may assume; its ARN."""
        iam, name = self._client("iam"), "role-" + uuid.uuid4().hex[:8]
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
             "Principal": {"Federated":
                           f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.example.com"}},
            {"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}}]})
        arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)[
            "Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="s3", PolicyDocument=ALLOW_S3)
        return arn

    def assume(self, role_arn: str, seconds: int = 900) -> dict[str, Any]:
        """Temporary keys of ``role_arn`` for ``seconds`` (STS AssumeRole, signed by the
        admin; below AWS's 900 s too): STS's ``Credentials`` (AccessKeyId,
        SecretAccessKey, SessionToken, Expiration)."""
        import botocore.config

        if self._sts is None:  # one client: building one takes a while
            self._sts = self._client("sts", config=botocore.config.Config(
                parameter_validation=False))  # lets DurationSeconds go below 900
        answer = self._sts.assume_role(
            RoleArn=role_arn, RoleSessionName="container-" + uuid.uuid4().hex[:8],
            DurationSeconds=seconds)
        found: dict[str, Any] = answer["Credentials"]
        return found

    def sessions(self, role_arn: str) -> list[dict[str, Any]]:
        """Every session STS opened on ``role_arn``, as moto records it (session_name,
        access_key_id, secret_access_key, session_token...)."""
        data = httpx.get(self.endpoint + "/moto-api/data.json", timeout=10).json()
        return [session for session in data.get("sts", {}).get("AssumedRole", [])
                if session["role_arn"] == role_arn]

    def bucket(self, key: Key | None = None) -> S3:
        """A fresh bucket, and an S3 record that signs with ``key`` (the admin's if
        none)."""
        key = key or self.admin
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
