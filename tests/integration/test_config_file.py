"""config_path=: run from an existing litestream.yml (its replicas, its $VAR references),
our supervision on top. Real Litestream, file and S3 (moto) replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_litestream import ConfigError, LitestreamLifespan
from tests.helpers import S3, LifespanFailed, client, lifespan, notes_app, restore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_typed_file_replica_from_the_file(tmp_path: Path, litestream_bin: Path) -> None:
    """Typed keys (type: file, path, sync-interval) replicate; durable writes, status and
    the final flush work as with keywords; the file itself is left as it was."""
    db, replica = tmp_path / "app.db", tmp_path / "replica"
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: app.db\n    replica:\n      type: file\n"
                      f"      path: {replica}\n      sync-interval: 1s\n")
    before = config.read_text()
    app = LitestreamLifespan(notes_app(db), config_path=config, bin_path=litestream_bin,
                             public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        status = (await http.get("/_litestream/status")).json()
        assert status["databases"][0]["path"] == str(db)
        assert status["databases"][0]["replica"] == f"file://{replica}"
        assert (await http.post("/notes/durable", json={"body": "kept"})).status_code == 201
    assert config.read_text() == before
    assert restore(litestream_bin, f"file://{replica}", tmp_path / "out.db") == ["kept"]


async def test_var_references_in_the_file_are_expanded_by_litestream(
    tmp_path: Path, litestream_bin: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials as $VAR in the file reach S3; the generated config keeps the
    reference, never the value."""
    monkeypatch.setenv("MY_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("MY_SECRET", s3.secret_access_key)
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"access-key-id: $MY_KEY_ID\nsecret-access-key: ${{MY_SECRET}}\n"
                      f"dbs:\n  - path: {db}\n    replica:\n      url: {s3.url()}\n")
    app = LitestreamLifespan(notes_app(db), config_path=config, bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes/durable", json={"body": "via $VAR"})).status_code == 201
        generated = state["litestream"].config_path.read_text()
        assert "MY_SECRET" in generated and s3.secret_access_key not in generated
    assert restore(litestream_bin, s3.url(), tmp_path / "out.db", env=s3.env()) == ["via $VAR"]


async def test_the_file_and_a_keyword_for_the_same_thing_is_an_error(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """config_path with database= names both; a file with exec: is refused."""
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replica:\n"
                      f"      url: file://{tmp_path}/r\n")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), config_path=config,
                             database=tmp_path / "app.db", bin_path=litestream_bin)
    with pytest.raises(LifespanFailed) as failure:
        async with lifespan(app):
            pass
    assert isinstance(failure.value.error, ConfigError)
    assert "database" in failure.value.message and "config_path" in failure.value.message
    config.write_text(config.read_text() + "exec: uvicorn app:app\n")
    app = LitestreamLifespan(notes_app(tmp_path / "app.db"), config_path=config,
                             bin_path=litestream_bin)
    with pytest.raises(LifespanFailed, match="exec"):
        async with lifespan(app):
            pass
