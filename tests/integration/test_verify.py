"""Verify: a good replica restores to a sound database holding every committed
transaction; a damaged one fails with the reason. Real Litestream, file and S3 replicas."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan, Verification
from tests.helpers import S3, client, file_app, lifespan, notes_app

pytestmark = [pytest.mark.anyio, pytest.mark.integration]




async def write_rows(http: object, count: int) -> None:
    for i in range(count):
        response = await http.post("/notes", json={"body": f"row-{i}"})  # type: ignore[attr-defined]
        assert response.status_code == 201


async def test_a_good_replica_verifies(tmp_path: Path, litestream_bin: Path, s3: S3) -> None:
    """Rows written (S3 replica): verify restores a copy at or past the position taken
    when it began, integrity ok, and the status shows the result."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        await write_rows(http, 20)
        result = await state["litestream"].verify()
        assert isinstance(result, Verification)
        assert result.ok, result.reason
        [checked] = result.databases
        assert checked.txid and checked.restored_txid and checked.restored_txid >= checked.txid
        shown = (await http.get("/_litestream/status")).json()["verification"]
        assert shown["ok"] is True and shown["age_s"] >= 0
    assert not list(tmp_path.glob("verify-*"))


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
async def test_a_damaged_replica_fails_verification(
    damage: str, tmp_path: Path, litestream_bin: Path
) -> None:
    """Bytes flipped in, or cut from, the replica's LTX files: verification fails and
    says why; the live database is untouched and the app keeps serving."""
    app = file_app(tmp_path, litestream_bin, public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        await write_rows(http, 20)
        await state["litestream"].sync()
        files = sorted((tmp_path / "replica").rglob("*.ltx"))
        assert files
        for ltx in files:
            data = bytearray(ltx.read_bytes())
            if damage == "truncate":
                ltx.write_bytes(bytes(data[: len(data) // 2]))
            else:
                for i in range(100, len(data) - 100, 97):
                    data[i] ^= 0xFF
                ltx.write_bytes(bytes(data))
        result = await state["litestream"].verify()
        assert not result.ok
        assert result.reason and "does not restore" in result.reason, result.reason
        shown = (await http.get("/_litestream/status")).json()["verification"]
        assert shown["ok"] is False and shown["reason"]
        assert len((await http.get("/notes")).json()) == 20


async def test_verify_interval_runs_in_the_background(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """verify_interval: the status shows a verification without anyone asking."""
    app = file_app(tmp_path, litestream_bin, verify_interval=0.5, public_details=True)
    async with lifespan(app) as state, client(app, state) as http:
        await write_rows(http, 3)
        with anyio.fail_after(15):
            while (await http.get("/_litestream/status")).json()["verification"] is None:
                await anyio.sleep(0.1)
        assert (await http.get("/_litestream/status")).json()["verification"]["ok"] is True


def verify_cli(tmp_path: Path, litestream_bin: Path, *extra: str):  # type: ignore[no-untyped-def]
    from tests.cli.test_cli import cli

    return cli("verify", "--database", str(tmp_path / "app.db"),
               "--replica-url", f"file://{tmp_path}/replica", *extra,
               env={"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin)})


async def test_the_cli_verifies_against_the_running_app_then_alone(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """`asgi-litestream verify`: exit 0 and the app's position compared while it runs;
    exit 0 with the position not compared once it stopped; exit 1 on a damaged replica;
    exit 2 when it cannot run at all."""
    app = file_app(tmp_path, litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        await write_rows(http, 5)
        running = await anyio.to_thread.run_sync(verify_cli, tmp_path, litestream_bin)
    assert running.returncode == 0, running.stderr
    assert "(the app was at " in running.stdout and "integrity ok" in running.stdout

    alone = verify_cli(tmp_path, litestream_bin, "--json")
    assert alone.returncode == 0, alone.stderr
    assert '"ok": true' in alone.stdout

    for ltx in (tmp_path / "replica").rglob("*.ltx"):
        ltx.write_bytes(ltx.read_bytes()[:40])
    damaged = verify_cli(tmp_path, litestream_bin)
    assert damaged.returncode == 1 and damaged.stdout.startswith("FAILED "), damaged.stdout

    from tests.cli.test_cli import cli

    broken = cli("verify", "--database", str(tmp_path / "app.db"),
                 "--replica-url", f"file://{tmp_path}/replica",
                 env={"ASGI_LITESTREAM_BIN_PATH": str(tmp_path / "no-such-binary")})
    assert broken.returncode == 2, broken.stderr


async def test_verify_after_a_rotation_restores_with_the_new_keys(
    tmp_path: Path, litestream_bin: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After rotate_credentials, verify's `litestream restore` runs with the service's
    environment as it is now (the new keys: moto does not check them, so this proves
    what reaches it) and still verifies."""
    import asgi_litestream._restore.verify as verify_module

    given: list[dict[str, str]] = []
    run_process = anyio.run_process

    async def spy(command: list[str], **kwargs: object) -> object:
        if any("verify-" in str(arg) for arg in command):  # verify's; not a listing's
            given.append(dict(kwargs["env"]))  # type: ignore[call-overload]
        return await run_process(command, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verify_module.anyio, "run_process", spy)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin)
    async with lifespan(app) as state, client(app, state) as http:
        await write_rows(http, 5)
        supervisor = state["litestream"]
        await supervisor.rotate_credentials(access_key_id="AKIA-ROTATED-V",
                                            secret_access_key="secret-rotated-v")
        result = await supervisor.verify()
    assert result.ok, result.reason
    assert [(e["LITESTREAM_ACCESS_KEY_ID"], e["LITESTREAM_SECRET_ACCESS_KEY"])
            for e in given] == [("AKIA-ROTATED-V", "secret-rotated-v")]
