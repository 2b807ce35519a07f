"""Verify after a key rotation, without the real binary: each run reads the service's
environment as it is then, and its failure reason is scrubbed of keys rotated in after
the verifier was made (the real binary: tests/integration/test_verify.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from asgi_litestream._config.databases import Database
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._restore.verify import Verifier

# A `litestream restore` refused by the storage that says which keys it was given, its
# secret included (as a careless error message might).
REFUSED = f"#!{sys.executable}\n" + """\
import os, sys
with open(os.environ["FAKE_KEYS"], "a") as keys:
    keys.write(os.environ["LITESTREAM_ACCESS_KEY_ID"] + "\\n")
print("Error: access denied for " + os.environ["LITESTREAM_SECRET_ACCESS_KEY"])
sys.exit(1)
"""


@pytest.mark.anyio
async def test_a_verification_uses_and_scrubs_the_keys_of_now(tmp_path: Path) -> None:
    """Keys rotated into the shared environment and the log after the verifier was
    made: the restore runs with them and the reason shows neither secret."""
    binary = tmp_path / "litestream"
    binary.write_text(REFUSED)
    binary.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "FAKE_KEYS": str(tmp_path / "keys"),
           "LITESTREAM_ACCESS_KEY_ID": "AKIA-OLD", "LITESTREAM_SECRET_ACCESS_KEY": "sec-old"}
    log = LitestreamLog(["sec-old"])
    verifier = Verifier(name="t", binary=binary, config_path=tmp_path / "litestream.yml",
                        databases=[Database(path=tmp_path / "app.db",
                                            replica_url="s3://bucket/app")],
                        env=env, timeout=10, secrets=lambda: log.secrets,
                        control=lambda: None, on_result=lambda: None)
    first = await verifier.verify()
    # What Credentials.rotate does: the shared environment, then the scrubber.
    env.update(LITESTREAM_ACCESS_KEY_ID="AKIA-NEW", LITESTREAM_SECRET_ACCESS_KEY="sec-new")
    log.add_secrets(["AKIA-NEW", "sec-new"])
    second = await verifier.verify()
    assert (tmp_path / "keys").read_text().splitlines() == ["AKIA-OLD", "AKIA-NEW"]
    for result in (first, second):
        assert not result.ok and result.reason is not None
        assert "access denied for ***" in result.reason
    assert "sec-new" not in str(second.to_json()) and "sec-old" not in str(first.to_json())
