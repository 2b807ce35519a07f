"""The asgi-litestream command line, run as a real subprocess with the real binary."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_litestream._config.databases import Database
from asgi_litestream._locks.leader_info import LeaderInfo
from asgi_litestream._locks.workers import Leadership
from asgi_litestream._release import platform_asset
from asgi_litestream._state import State

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.0.0-cli-test"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asgi_litestream ARGS`` with this environment plus ``env``."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "asgi_litestream", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def _serve(handler: Any) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 and a free port; yield the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# -- config --------------------------------------------------------------------


def test_config_from_flags(tmp_path: Path) -> None:
    """`config` prints the YAML for the databases and replica given as flags."""
    result = cli("config", "--database", str(tmp_path / "app.db"),
                 "--replica-url", f"file://{tmp_path}/replica", "--sync-interval", "2")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["dbs"] == [{"path": str(tmp_path / "app.db"), "replica": {
        "url": f"file://{tmp_path}/replica", "sync-interval": "2000ms"}}]
    assert "socket" not in config


def test_config_from_env_and_flags_override_it(tmp_path: Path) -> None:
    """Settings come from ASGI_LITESTREAM_* variables; a flag wins over its variable."""
    env = {"ASGI_LITESTREAM_DATABASE": f"{tmp_path}/a.db,{tmp_path}/b.db",
           "ASGI_LITESTREAM_REPLICA_URL": f"file://{tmp_path}/replica",
           "ASGI_LITESTREAM_LOG_LEVEL": "debug"}
    from_env = yaml.safe_load(cli("config", env=env).stdout)
    assert [db["replica"]["url"] for db in from_env["dbs"]] == [
        f"file://{tmp_path}/replica/a", f"file://{tmp_path}/replica/b"]
    assert from_env["logging"]["level"] == "debug"
    overridden = yaml.safe_load(cli("config", "--database", str(tmp_path / "c.db"),
                                    "--log-level", "warn", env=env).stdout)
    assert [db["path"] for db in overridden["dbs"]] == [str(tmp_path / "c.db")]
    assert overridden["logging"]["level"] == "warn"


def test_config_holds_no_secret(tmp_path: Path) -> None:
    """An sftp password and S3 keys from the environment never appear in the output."""
    password, key_id, secret = "sftp-PaSsWoRd-42", "AKIACLITESTKEY0001", "s3-SeCrEt-KeY-99"
    env = {"ASGI_LITESTREAM_DATABASE": str(tmp_path / "app.db"),
           "ASGI_LITESTREAM_REPLICA_URL": f"sftp://backup:{password}@sftp.example/app",
           "LITESTREAM_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    result = cli("config", env=env)
    assert result.returncode == 0, result.stderr
    for value in (password, key_id, secret):
        assert value not in result.stdout + result.stderr
    url = yaml.safe_load(result.stdout)["dbs"][0]["replica"]["url"]
    assert url == "sftp://backup:${ASGI_LITESTREAM_REPLICA_0_PASSWORD}@sftp.example/app"


def test_config_redacts_secret_query_values(tmp_path: Path) -> None:
    """A token passed as a replica URL query value is printed as ***."""
    result = cli("config", "--database", str(tmp_path / "app.db"),
                 "--replica-url", "webdavs://dav.example/app?token=tOkEn%2F123&depth=1")
    assert result.returncode == 0, result.stderr
    assert "tOkEn" not in result.stdout
    url = yaml.safe_load(result.stdout)["dbs"][0]["replica"]["url"]
    assert url == "webdavs://dav.example/app?token=${ASGI_LITESTREAM_REPLICA_0_TOKEN}&depth=1"


@pytest.mark.parametrize(("args", "env", "named", "keyword"), [
    (["--replica-url", "ftp://host/x"], {}, "error: --replica-url ftp://host/x: ",
     "replica_url="),
    (["--replica-url", "file:///r", "--sync-interval", "-1"], {},
     "error: --sync-interval -1.0: ", "sync_interval="),
    (["--replica-url", "file:///r"], {"ASGI_LITESTREAM_STOP_TIMEOUT": "soon"},
     "error: ASGI_LITESTREAM_STOP_TIMEOUT=soon: ", "stop_timeout="),
], ids=["flag", "number", "env"])
def test_config_bad_option(tmp_path: Path, args: list[str], env: dict[str, str],
                           named: str, keyword: str) -> None:
    """A bad option exits 1 with the ConfigError message naming it as the command line
    gave it (flag or variable, not the keyword), and no traceback."""
    result = cli("config", "--database", str(tmp_path / "app.db"), *args, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert named in result.stderr
    assert keyword not in result.stderr
    assert "Fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    """An unknown flag or a missing command is argparse's usage error, exit 2."""
    assert cli("config", "--no-such-flag").returncode == 2
    assert cli().returncode == 2


# -- restore -------------------------------------------------------------------


def _write_notes(db: Path, *bodies: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(b,) for b in bodies])
    conn.close()


def _notes(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]
    conn.close()
    return rows


def _replicate_once(litestream_bin: Path, db: Path, replica_url: str) -> None:
    """Back ``db`` up once with the real `litestream replicate -once`, then delete it."""
    config = db.with_suffix(".yml")
    config.write_text(yaml.safe_dump({"dbs": [{"path": str(db), "replica": {"url": replica_url}}]}))
    subprocess.run([str(litestream_bin), "replicate", "-once", "-config", str(config)],
                   check=True, capture_output=True, timeout=60)
    for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), config):
        leftover.unlink(missing_ok=True)


@dataclass
class Restore:
    """A database whose only copy is a real file:// replica."""

    db: Path
    replica_url: str
    tmpdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("restore", "--database", str(self.db), "--replica-url", self.replica_url,
                   *args, env={"TMPDIR": str(self.tmpdir), **self.env})


@pytest.fixture
def backed_up(tmp_path: Path, litestream_bin: Path) -> Restore:
    """app.db with two notes, replicated to a file:// replica and then deleted."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    _write_notes(db, "first", "second")
    url = f"file://{tmp_path}/replica"
    _replicate_once(litestream_bin, db, url)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return Restore(db=db, replica_url=url, tmpdir=tmpdir)


def test_restore_brings_the_rows_back(backed_up: Restore) -> None:
    """A deleted database is restored from its replica, and the private workdir removed."""
    result = backed_up.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"restored {backed_up.db} from {backed_up.replica_url}\n"
    assert _notes(backed_up.db) == ["first", "second"]
    assert list(backed_up.tmpdir.iterdir()) == []


def test_restore_refuses_an_existing_database(backed_up: Restore) -> None:
    """An existing database is left alone (exit 1) unless --force replaces it."""
    _write_notes(backed_up.db, "local")
    refused = backed_up.run()
    assert refused.returncode == 1
    assert f"{backed_up.db} already exists; refusing to overwrite" in refused.stderr
    assert "--force" in refused.stderr
    assert _notes(backed_up.db) == ["local"]
    forced = backed_up.run("--force")
    assert forced.returncode == 0, forced.stderr
    assert _notes(backed_up.db) == ["first", "second"]


def test_restore_if_db_not_exists_keeps_it(backed_up: Restore) -> None:
    """--if-db-not-exists keeps an existing database and exits 0 (an init container rerun)."""
    _write_notes(backed_up.db, "local")
    result = backed_up.run("--if-db-not-exists")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kept {backed_up.db}: it already exists\n"
    assert _notes(backed_up.db) == ["local"]


def test_restore_several_databases(tmp_path: Path, litestream_bin: Path) -> None:
    """With databases from the environment, each gets a line: restored, or no backup."""
    (tmp_path / "data").mkdir()
    app, users = tmp_path / "data" / "app.db", tmp_path / "data" / "users.db"
    _write_notes(app, "kept safe")
    _replicate_once(litestream_bin, app, f"file://{tmp_path}/replica/app")
    result = cli("restore", env={"ASGI_LITESTREAM_DATABASE": f"{app},{users}",
                                 "ASGI_LITESTREAM_REPLICA_URL": f"file://{tmp_path}/replica"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"restored {app} from file://{tmp_path}/replica/app",
        f"no backup of {users} in file://{tmp_path}/replica/users: it starts fresh",
    ]
    assert _notes(app) == ["kept safe"]
    assert not users.exists()


def test_restore_from_an_empty_replica_starts_fresh(tmp_path: Path) -> None:
    """An empty replica is not an error: exit 0, no file written, a 'starts fresh' line."""
    db = tmp_path / "app.db"
    result = cli("restore", "--database", str(db), "--replica-url", f"file://{tmp_path}/empty")
    assert result.returncode == 0, result.stderr
    assert "no backup of" in result.stdout
    assert "starts fresh" in result.stdout
    assert not db.exists()


def test_restore_from_a_corrupt_replica_fails(tmp_path: Path) -> None:
    """A replica Litestream cannot read exits 1 with Litestream's error and writes nothing."""
    segment = tmp_path / "replica" / "ltx" / "0" / "0000000000000001-0000000000000001.ltx"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"garbage")
    db = tmp_path / "app.db"
    result = cli("restore", "--database", str(db), "--replica-url", f"file://{tmp_path}/replica")
    assert result.returncode == 1
    assert "invalid ltx file" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replica"]


def test_restore_error_hides_the_password(tmp_path: Path) -> None:
    """An unreachable sftp replica exits 1; its password is in neither output."""
    result = cli("restore", "--database", str(tmp_path / "app.db"),
                 "--replica-url", "sftp://backup:PaSsWoRd-77@127.0.0.1:1/app")
    assert result.returncode == 1
    assert "connection refused" in result.stderr
    assert "sftp://backup:***@127.0.0.1:1/app" in result.stderr
    assert "PaSsWoRd-77" not in result.stdout + result.stderr


# -- restore to a point in time, backups -------------------------------------------


def _backups(backed_up: Restore, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("backups", "--database", str(backed_up.db), "--replica-url",
               backed_up.replica_url, *args, env={"TMPDIR": str(backed_up.tmpdir)})


def test_backups_lists_the_restore_points(backed_up: Restore) -> None:
    """`backups` prints each restore point (txid, created, size); --json the same points."""
    listed = _backups(backed_up, "--json")
    assert listed.returncode == 0, listed.stderr
    (database,) = json.loads(listed.stdout)["databases"]
    assert database["path"] == str(backed_up.db)
    assert database["replica"] == backed_up.replica_url
    points = database["restore_points"]
    assert points and set(points[0]) == {"txid", "created", "size", "level", "min_txid"}
    table = _backups(backed_up)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"{backed_up.db}  (replica {backed_up.replica_url})"
    assert lines[2].split() == ["txid", "created", "(UTC)", "size", "from"]
    last = points[-1]
    assert lines[2 + len(points)].split()[:4] == [
        str(last["txid"]), last["created"], str(last["size"]), "B"]
    rewound = backed_up.run("--txid", str(last["txid"]), "--output",
                            str(backed_up.tmpdir.parent / "side.db"))
    assert rewound.returncode == 0, rewound.stderr
    assert _notes(backed_up.tmpdir.parent / "side.db") == ["first", "second"]
    assert list(backed_up.tmpdir.iterdir()) == []


def test_backups_of_an_empty_replica(tmp_path: Path) -> None:
    """A replica with nothing in it lists no restore point, and that is not an error."""
    args = ("--database", str(tmp_path / "app.db"), "--replica-url", f"file://{tmp_path}/none")
    table = cli("backups", *args)
    assert table.returncode == 0, table.stderr
    assert table.stdout == f"{tmp_path}/app.db  (replica file://{tmp_path}/none)\n  no backup\n"
    listed = cli("backups", "--json", *args)
    assert json.loads(listed.stdout)["databases"][0]["restore_points"] == []


def test_backups_error_hides_the_password(tmp_path: Path) -> None:
    """An unreachable sftp replica exits 1; its password is in neither output."""
    result = cli("backups", "--database", str(tmp_path / "app.db"),
                 "--replica-url", "sftp://backup:PaSsWoRd-77@127.0.0.1:1/app")
    assert result.returncode == 1
    assert "listing the backups of" in result.stderr
    assert "PaSsWoRd-77" not in result.stdout + result.stderr


def test_restore_to_a_time_before_any_backup_fails(backed_up: Restore) -> None:
    """A --timestamp older than every restore point exits 1 and writes nothing."""
    result = backed_up.run("--timestamp", "2000-01-01T00:00:00Z")
    assert result.returncode == 1
    assert "has no restore point before 2000-01-01T00:00:00Z" in result.stderr
    assert "asgi-litestream backups" in result.stderr
    assert not backed_up.db.exists()


def test_restore_to_a_time_in_place_follows_the_existing_rules(backed_up: Restore) -> None:
    """Without --output a --timestamp restores the database itself: a missing one is
    written, an existing one is kept unless --force."""
    later = "2999-01-01T00:00:00Z"  # after every point: the latest state
    restored = backed_up.run("--timestamp", later)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored {backed_up.db} as of txid ")
    assert _notes(backed_up.db) == ["first", "second"]
    _write_notes(backed_up.db, "local")
    refused = backed_up.run("--timestamp", later)
    assert refused.returncode == 1 and "--force" in refused.stderr
    forced = backed_up.run("--timestamp", later, "--force")
    assert forced.returncode == 0, forced.stderr
    assert _notes(backed_up.db) == ["first", "second"]


def test_restore_output_refuses_force(backed_up: Restore, tmp_path: Path) -> None:
    """--output never overwrites, so --force with it is refused rather than ignored."""
    result = backed_up.run("--output", str(tmp_path / "x.db"), "--force")
    assert result.returncode == 1
    assert "--output never overwrites" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_restore_one_of_several_databases_with_only(tmp_path: Path, litestream_bin: Path) -> None:
    """--output and --txid need one database: --only picks it and keeps its replica URL."""
    (tmp_path / "data").mkdir()
    app, users = tmp_path / "data" / "app.db", tmp_path / "data" / "users.db"
    _write_notes(app, "app row")
    _replicate_once(litestream_bin, app, f"file://{tmp_path}/replica/app")
    env = {"ASGI_LITESTREAM_DATABASE": f"{app},{users}",
           "ASGI_LITESTREAM_REPLICA_URL": f"file://{tmp_path}/replica"}
    out = tmp_path / "side.db"
    for flags in (["--output", str(out)], ["--txid", "1"]):
        refused = cli("restore", *flags, env=env)
        assert refused.returncode == 1
        assert f"{flags[0]} restores one database, and 2 are configured" in refused.stderr
        assert "--only" in refused.stderr
    result = cli("restore", "--only", "app", "--output", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert _notes(out) == ["app row"]
    listed = cli("backups", "--only", str(users), env=env)
    assert listed.stdout.splitlines() == [
        f"{users}  (replica file://{tmp_path}/replica/users)", "  no backup"]


def test_restore_force_is_refused_while_an_app_holds_the_database(backed_up: Restore) -> None:
    """While another process leads the database, `restore --force` (latest or to a point)
    exits 1 and leaves it alone; once the lock is free, --force replaces it."""
    _write_notes(backed_up.db, "local")
    app = Leadership((Database(path=backed_up.db, replica_url=backed_up.replica_url),))
    assert app.try_lead()
    app.publish(LeaderInfo(pid=os.getpid(), state=State.RUNNING))
    try:
        for args in (["--force"], ["--force", "--timestamp", "2999-01-01T00:00:00Z"]):
            refused = backed_up.run(*args)
            assert refused.returncode == 1
            assert (f"{backed_up.db} is in use: an app is running it (pid {os.getpid()})"
                    in refused.stderr)
            assert _notes(backed_up.db) == ["local"]
    finally:
        app.resign()
    forced = backed_up.run("--force")
    assert forced.returncode == 0, forced.stderr
    assert _notes(backed_up.db) == ["first", "second"]


# -- status --------------------------------------------------------------------


def _status_body(status: str = "running") -> dict[str, Any]:
    running = status == "running"
    return {
        "name": "orders", "status": status, "state": "running" if running else "failed",
        "role": "leader", "leader_pid": 4200, "worker_pid": 4200,
        "healthy": running, "pid": 4242 if running else None, "uptime_s": 812.4,
        "restarts": 6, "last_exit_code": -9, "last_flush_ok": None, "version": "0.5.17",
        "last_errors": [] if running else ["litestream[4242]: monitor error"],
        "databases": [{
            "path": "/data/app.db", "replica": "s3://my-bucket/app",
            "litestream_status": "replicating", "txid": 1843, "replicated_txid": 1840,
            "lag": 3, "behind_s": 0.4, "last_sync_at": "2026-11-24T11:04:00.729Z",
            "healthy": running, "error": None,
            "last_errors": [] if running else ["sync error: connection refused"],
        }],
    }


@dataclass
class Canned:
    """What the status server answers."""

    base_url: str = ""
    code: int = 200
    body: bytes = b""
    content_type: str = "application/json"


@pytest.fixture
def status_server() -> Iterator[Canned]:
    """A real HTTP server on a free loopback port answering every GET with ``Canned``."""
    canned = Canned()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(canned.code)
            self.send_header("Content-Type", canned.content_type)
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _serve(Handler) as base_url:
        canned.base_url = base_url
        yield canned


def test_status_running_exits_0(status_server: Canned) -> None:
    """A running supervisor exits 0 and is printed field by field."""
    status_server.body = json.dumps(_status_body()).encode()
    result = cli("status", status_server.base_url + "/_litestream/status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("name:            orders", "status:          running (state: running)",
                     "pid:             4242", "uptime:          812.4 s",
                     "role:            leader (leader pid 4200, this worker 4200)",
                     "restarts:        6", "last exit code:  -9",
                     "database:        /data/app.db", "  replica:       s3://my-bucket/app",
                     "  txid:          1843 (replicated 1840, lag 3)",
                     "  healthy:       yes"):
        assert expected in lines
    assert "last errors:" not in lines


def test_status_down_exits_1(status_server: Canned) -> None:
    """A 503 with status "down" exits 1 and shows the state and the last errors."""
    status_server.code, status_server.body = 503, json.dumps(_status_body("down")).encode()
    result = cli("status", status_server.base_url + "/_litestream/status")
    assert result.returncode == 1, result.stderr
    assert "status:          down (state: failed)" in result.stdout
    assert "pid:             -" in result.stdout
    assert "  last error:    sync error: connection refused\n" in result.stdout
    assert result.stdout.endswith("last errors:\n  litestream[4242]: monitor error\n")


def test_status_json_prints_the_body(status_server: Canned) -> None:
    """--json prints the JSON as received; the exit code still follows status."""
    body = _status_body("down")
    status_server.code, status_server.body = 503, json.dumps(body).encode()
    result = cli("status", "--json", status_server.base_url + "/_litestream/status")
    assert result.returncode == 1
    assert json.loads(result.stdout) == body


def test_status_not_the_status_json_exits_2(status_server: Canned) -> None:
    """A page that is not the status JSON (wrong path, HTML) exits 2."""
    status_server.body, status_server.content_type = b"<html>hello</html>", "text/html"
    html = cli("status", status_server.base_url + "/")
    assert html.returncode == 2
    assert "without the status JSON" in html.stderr
    status_server.code, status_server.body = 404, b'{"detail": "Not Found"}'
    assert cli("status", status_server.base_url + "/nope").returncode == 2


def test_status_unreachable_exits_2() -> None:
    """A port nobody listens on exits 2 (a failed exec probe), with the reason on stderr."""
    with socket.socket() as bound:
        # Bound but not listening: connections are refused, and no one else can take the port.
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        result = cli("status", "--timeout", "2", f"http://127.0.0.1:{port}/_litestream/status")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr


# -- download ------------------------------------------------------------------


@dataclass
class Mirror:
    root: Path
    sha256: str


@pytest.fixture(scope="module")
def mirror_files(tmp_path_factory: pytest.TempPathFactory, litestream_bin: Path) -> Mirror:
    """The real binary packed like a release asset for this platform, in a mirror layout."""
    os_name, arch = platform_asset()
    root = tmp_path_factory.mktemp("mirror")
    archive = root / f"v{VERSION}" / f"litestream-{VERSION}-{os_name}-{arch}.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(litestream_bin, arcname="litestream")
    return Mirror(root, hashlib.sha256(archive.read_bytes()).hexdigest())


@pytest.fixture
def mirror(mirror_files: Mirror) -> Iterator[str]:
    """A real HTTP server on a free loopback port serving the mirror; yields its URL."""
    with _serve(functools.partial(_Quiet, directory=str(mirror_files.root))) as base_url:
        yield base_url


def test_download_prints_only_the_path(tmp_path: Path, mirror: str, mirror_files: Mirror) -> None:
    """stdout is exactly the binary's path (for $(...)), progress goes to stderr, it runs."""
    cache = tmp_path / "cache"
    result = cli("download", "--version", VERSION, "--download-url", mirror,
                 "--cache-dir", str(cache), "--sha256", mirror_files.sha256)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{cache / VERSION / 'litestream'}\n"
    assert "downloading litestream from" in result.stderr
    version = subprocess.run([result.stdout.strip(), "version"], capture_output=True,
                             text=True, timeout=30, check=True)
    assert version.stdout.strip().startswith("0.5")


def test_download_defaults_from_env_and_cache(tmp_path: Path, mirror: str,
                                              mirror_files: Mirror) -> None:
    """The mirror and cache come from the environment; a second run is quiet and cached."""
    env = {"ASGI_LITESTREAM_DOWNLOAD_URL": mirror,
           "ASGI_LITESTREAM_CACHE_DIR": str(tmp_path / "cache")}
    args = ("download", "--version", VERSION, "--sha256", mirror_files.sha256)
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    # The mirror's file is gone: only the cache can answer now.
    env["ASGI_LITESTREAM_DOWNLOAD_URL"] = mirror + "/gone"
    second = cli("-q", *args, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout == f"{tmp_path / 'cache' / VERSION / 'litestream'}\n"
    assert second.stderr == ""


def test_download_checksum_mismatch_exits_1(tmp_path: Path, mirror: str) -> None:
    """A wrong --sha256 exits 1 with the mismatch message, prints no path, caches nothing."""
    result = cli("download", "--version", VERSION, "--download-url", mirror,
                 "--cache-dir", str(tmp_path / "cache"), "--sha256", "0" * 64)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "sha256 mismatch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / VERSION / "litestream").exists()
