"""Keys rotated on a standby worker (the one a rotate call reached; the leader runs
Litestream): kept in its environment, so that a Litestream it starts on taking over
runs with them (the real takeover: tests/integration/test_rotate_standby.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from asgi_litestream._config.settings import Settings
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._primary.credentials import Credentials


class StandbyKeeper:
    """What Credentials asks of the Keeper, as on a standby: no Litestream here."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.child = None
        self.closing = False


@pytest.mark.anyio
async def test_a_standby_keeps_rotated_keys_for_when_it_leads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No restart (nothing runs here), but the shared environment and the scrubber hold
    the new keys, and the status says where they came from."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    settings = Settings.from_options(environ={}, database=tmp_path / "app.db",
                                     replica_url="s3://bucket/app",
                                     access_key_id="AKIA-OLD", secret_access_key="sec-old")
    env = settings.child_env({})
    log = LitestreamLog(settings.secrets())
    credentials = Credentials(settings, env=env, keeper=StandbyKeeper(),  # type: ignore[arg-type]
                              log=log)
    await credentials.rotate("AKIA-NEW", "sec-new")
    assert env["LITESTREAM_ACCESS_KEY_ID"] == "AKIA-NEW"
    assert env["LITESTREAM_SECRET_ACCESS_KEY"] == "sec-new"
    assert {"AKIA-NEW", "sec-new"} <= set(log.secrets)
    assert credentials.last_pause_s is None and credentials.rotations == 1
    assert credentials.status().source == "call"
    assert "does not run in this worker: it starts with them" in caplog.text
