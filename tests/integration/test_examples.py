"""The documented FastAPI + SQLAlchemy example (examples/sqlalchemy_app/app.py, shown in
docs/index.md) runs as written under uvicorn with the real Litestream: its lifespan
creates the table, a durable note reaches the replica, and it stops cleanly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import restore
from tests.integration.servers import start_server

pytestmark = pytest.mark.integration


def test_the_sqlalchemy_example_serves_backs_up_and_stops(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """A fresh data folder: the app's lifespan creates `notes`, a note is answered only
    once it is in the replica, and SIGTERM ends it after a final flush (uvicorn re-raises
    the signal once its shutdown is done: exit -SIGTERM)."""
    data = tmp_path / "data"
    server = start_server("uvicorn", tmp_path, {
        "NOTES_DATA_DIR": str(data), "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin)},
        app="examples.sqlalchemy_app.app:app")
    try:
        assert server.get("/notes").json() == []  # the table exists: the lifespan ran
        assert server.post_note("kept")["body"] == "kept"
        assert [n["body"] for n in server.get("/notes").json()] == ["kept"]
        assert restore(litestream_bin, f"file://{data}/replica", tmp_path / "check.db") == [
            "kept"]
    finally:
        code = server.stop()
    assert code == -signal.SIGTERM, server.output()
    assert "final flush complete" in server.output()
