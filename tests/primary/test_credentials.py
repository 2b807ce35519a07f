"""The status's `credentials`: where the keys came from and when, whether the replica
refuses them, never the keys; and the refusal heard in Litestream's running lines."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from asgi_litestream._config.settings import Settings
from asgi_litestream._litestream.logs import LitestreamLog
from asgi_litestream._locks.leader_info import CredentialsStatus, LeaderInfo
from tests.helpers import status_snapshot

# What Litestream 0.5.17 logs while running once moto (auth enforced) forgets its key.
REFUSED = ('{"time":"2026-12-06T02:42:58.787Z","level":"ERROR","msg":"monitor error",'
           '"system":"store","db":"app.db","replica":"s3","error":"write ltx file: s3: put '
           'object app/0000/000000000000000f-000000000000000f.ltx: operation error S3: '
           'PutObject, https response error StatusCode: 403, RequestID: mQkd, HostID: 9Gjj, '
           'api error InvalidAccessKeyId: The AWS Access Key Id you provided does not exist '
           'in our records.","consecutive_errors":1,"backoff":1000000000}')
CUT = ('{"time":"2026-12-06T02:42:58.787Z","level":"ERROR","msg":"monitor error",'
       '"db":"app.db","error":"dial tcp 127.0.0.1:9: connect: connection refused"}')


def credentials(tmp_path: Path, **options: Any) -> tuple[Any, LitestreamLog, Any]:
    """Credentials of an S3 service whose Litestream runs as pid 100; its log; its keeper."""
    from asgi_litestream._primary.credentials import Credentials

    settings = Settings.from_options(environ={}, database=tmp_path / "app.db",
                                     replica_url="s3://bucket/app", **options)
    log = LitestreamLog(settings.secrets())
    keeper = SimpleNamespace(child=SimpleNamespace(pid=100))
    replicated = SimpleNamespace(txid=5)
    found = Credentials(settings, env={}, keeper=keeper, log=log,  # type: ignore[arg-type]
                        replicated=lambda: replicated.txid)
    return found, log, replicated


def test_credentials_json_names_the_source_and_a_utc_time(tmp_path: Path) -> None:
    """source, loaded_at (ISO 8601, Z), state, rejected_since, problem: never a key."""
    found = credentials(tmp_path, access_key_id="AKIA-TEST-1",
                        secret_access_key="sec-1")[0].status().to_json()
    assert set(found) == {"source", "loaded_at", "state", "rejected_since", "problem",
                          "rotations", "last_pause_s"}
    assert found["source"] == "option" and found["state"] == "ok"
    assert found["loaded_at"].endswith("Z") and "T" in found["loaded_at"]
    assert "AKIA-TEST-1" not in str(found) and "sec-1" not in str(found)


def test_the_status_json_has_credentials_between_lease_and_databases() -> None:
    """The status JSON's keys are pinned: `credentials` comes after `lease`."""
    keys = list(status_snapshot({"name": "litestream", "credentials": {
        "source": "file", "loaded_at": "2026-01-01T00:00:00.000Z"}}).to_json())
    assert keys[-3:] == ["lease", "credentials", "databases"]


def test_a_refused_key_is_heard_once_named_and_cleared_when_the_replica_moves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The running child's refusal line → rejected, since when, one error line naming
    the source and the fix; a cut connection or another process's line is not a
    refusal; the replica moving forward again clears it."""
    caplog.set_level(logging.INFO, "asgi_litestream")
    keys = tmp_path / "id", tmp_path / "secret"
    keys[0].write_text("AKIA-TEST-1\n")
    keys[1].write_text("sec-1\n")
    found, log, replicated = credentials(tmp_path, access_key_id_file=keys[0],
                                         secret_access_key_file=keys[1])
    log.line(CUT.encode(), 100)
    log.line(REFUSED.encode(), 99)  # a Litestream stopping for a rotation
    assert not found.status().rejected
    log.line(REFUSED.encode(), 100)
    log.line(REFUSED.encode(), 100)
    status = found.status()
    assert status.rejected and status.rejected_since is not None
    assert status.problem == "the access key id is not known to the storage"
    assert status.to_json()["state"] == "rejected"
    said = [r.getMessage() for r in caplog.records if "refuses the S3 keys" in r.getMessage()]
    assert len(said) == 1 and "source file" in said[0]
    assert "access_key_id_file" in said[0] and "AKIA-TEST-1" not in caplog.text
    found.refusal.check_progress()  # the replica has not moved: still refused
    assert found.status().rejected
    replicated.txid = 6
    found.refusal.check_progress()
    assert not found.status().rejected
    assert "accepts the S3 keys again" in caplog.text


def test_the_leader_publishes_its_credentials_and_old_records_read_as_none() -> None:
    """The standbys show the keys the leader's Litestream runs with."""
    status = CredentialsStatus(source="file", loaded_at="2026-01-01T00:00:00.000Z",
                               rejected_since="2026-01-01T00:01:00.000Z",
                               problem="the access key id is not known to the storage")
    info = LeaderInfo.from_json(LeaderInfo(pid=1, credentials=status).encode())
    assert info is not None and info.credentials == status
    older = LeaderInfo.from_json(b'{"pid": 1}')
    assert older is not None and older.credentials is None
    assert CredentialsStatus.from_json({"source": 3}) is None


class FlakyKeeper:
    """What Credentials asks of the Keeper; its next spawn fails once when told to."""

    def __init__(self) -> None:
        import anyio

        from asgi_litestream._state import State

        self.lock = anyio.Lock()
        self.child: Any = None
        self.closing = False
        self.want_running = True
        self.state = State.RUNNING
        self.fail_next = True
        self.spawned = 0

    def set_state(self, state: Any) -> None:
        self.state = state

    def wake(self) -> None:
        pass

    async def spawn(self) -> None:
        from asgi_litestream._exceptions import StartupError
        from asgi_litestream._state import State

        if self.fail_next:
            self.fail_next = False
            raise StartupError("litestream exited at once")
        self.spawned += 1
        self.child = SimpleNamespace(pid=200 + self.spawned)
        self.set_state(State.RUNNING)


@pytest.mark.anyio
async def test_the_rotation_after_one_whose_start_failed_starts_litestream(
        tmp_path: Path) -> None:
    """A rotation whose new Litestream did not start leaves it failed; the next
    rotation (the files' retry, or a call) starts it, rather than only store keys."""
    from asgi_litestream._exceptions import StartupError
    from asgi_litestream._primary.credentials import Credentials

    settings = Settings.from_options(environ={}, database=tmp_path / "app.db",
                                     replica_url="s3://bucket/app")
    keeper = FlakyKeeper()
    credentials = Credentials(settings, env={}, keeper=keeper,  # type: ignore[arg-type]
                              log=LitestreamLog([]))

    class Running:
        pid = 100

        async def flush(self, *args: Any) -> bool:
            return True

        async def aclose(self, *, grace: float) -> None:
            pass

    keeper.child = Running()
    with pytest.raises(StartupError):
        await credentials.rotate("AKIA-TEST-2", "secret-2")
    assert keeper.state.value == "failed" and keeper.child is None
    assert credentials.status().rotations == 1
    await credentials.rotate("AKIA-TEST-3", "secret-3")
    assert keeper.state.value == "running" and keeper.child.pid == 201
    assert credentials.status().rotations == 2
    assert credentials.status().last_pause_s is not None
