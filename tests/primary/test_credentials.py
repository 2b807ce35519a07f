"""The status's `credentials`: where the keys came from and when, never the keys."""

from __future__ import annotations

from pathlib import Path

from asgi_litestream._config.settings import Settings
from asgi_litestream._litestream.logs import LitestreamLog
from tests.helpers import status_snapshot


def test_credentials_json_names_the_source_and_a_utc_time(tmp_path: Path) -> None:
    """source and loaded_at (ISO 8601, Z); nothing else, so never a key."""
    from asgi_litestream._primary.credentials import Credentials

    settings = Settings.from_options(environ={}, database=tmp_path / "app.db",
                                     replica_url="s3://bucket/app",
                                     access_key_id="AKIA-TEST-1", secret_access_key="sec-1")
    found = Credentials(settings, env={}, keeper=None, log=LitestreamLog([])).to_json()  # type: ignore[arg-type]
    assert set(found) == {"source", "loaded_at"} and found["source"] == "option"
    assert found["loaded_at"].endswith("Z") and "T" in found["loaded_at"]


def test_the_status_json_has_credentials_between_lease_and_databases() -> None:
    """The status JSON's keys are pinned: `credentials` comes after `lease`."""
    keys = list(status_snapshot({"name": "litestream", "credentials": {
        "source": "file", "loaded_at": "2026-01-01T00:00:00.000Z"}}).to_json())
    assert keys[-3:] == ["lease", "credentials", "databases"]
