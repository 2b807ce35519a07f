"""A boto3 S3 client for a Litestream replica URL, configured as Litestream reads it.

``s3://bucket/path?endpoint=...&region=...&forcePathStyle=true&skipVerify=true`` and the
child's environment (``LITESTREAM_*`` or ``AWS_*`` credentials, ``SSL_CERT_FILE``). A
replica that config_path's file writes as typed keys comes as such a URL too (endpoint,
region, addressing), its keys in that environment (``Settings.child_env``). boto3 is the
optional ``[s3]`` extra: callers check it is installed at startup, and it is untyped, so
it is imported here as ``Any``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any


def s3_client(query: Mapping[str, str], env: Mapping[str, str], **config: Any) -> Any:
    """A client for the replica URL's ``query``; ``config`` adds botocore Config options
    (timeouts, retries)."""
    boto3: Any = importlib.import_module("boto3")
    botocore_config: Any = importlib.import_module("botocore.config")
    endpoint = query.get("endpoint") or None
    if endpoint and "://" not in endpoint:
        endpoint = "https://" + endpoint  # as Litestream reads it
    # Litestream's addressing: path style with an endpoint unless told otherwise.
    path_style = query.get("forcePathStyle", "true" if endpoint else "false") == "true"
    style = {"addressing_style": "path"} if path_style else {}
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=query.get("region") or "us-east-1",
        aws_access_key_id=_first(env, "LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_first(env, "LITESTREAM_SECRET_ACCESS_KEY",
                                     "AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        verify=query.get("skipVerify") != "true" and _ca_bundle(env),
        config=botocore_config.Config(s3=style, **config),
    )


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[name] for name in names if env.get(name)), None)


def _ca_bundle(env: Mapping[str, str]) -> str | bool:
    """Litestream's trust (SSL_CERT_FILE), not AWS_CA_BUNDLE, which it cannot use."""
    return env.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_FILE") or True
