"""What `restore` prints: a progress line while it writes, only on a terminal; and with
--json one document saying what was restored (path, txid, bytes, seconds)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from asgi_litestream._cli.progress import Written, in_flight, watching
from tests.cli.test_cli import ROOT, Restore, _notes, _replicate_once, _write_notes, cli

# -- the progress line -----------------------------------------------------------------


def _grow(path: Path, chunks: int, pause: float) -> threading.Thread:
    """Write ``path`` a MiB at a time, like Litestream's ``<output>.tmp``."""

    def write() -> None:
        with path.open("wb") as file:
            for _ in range(chunks):
                file.write(b"\0" * 2**20)
                file.flush()
                time.sleep(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_the_line_is_redrawn_then_erased(tmp_path: Path) -> None:
    """On a stream, the written bytes and the rate are redrawn in place (\\r) while the
    temporary file grows, and erased at the end; the record holds the target's size."""
    target = tmp_path / "app.db"
    stream = io.StringIO()
    with watching(target, stream=stream, every=0.05) as written:
        _grow(tmp_path / ".app.db.restoring-1.tmp", chunks=6, pause=0.05).join()
        (tmp_path / ".app.db.restoring-1.tmp").rename(target)
    drawn = stream.getvalue()
    frames = drawn.split("\r")[1:-2]
    assert len(frames) >= 3, drawn
    assert all(frame.startswith("restoring app.db: ") and frame.rstrip().endswith("/s")
               for frame in frames), frames
    assert any("MiB, " in frame for frame in frames)
    assert drawn.endswith("\r" + " " * len(frames[-1].rstrip()) + "\r")
    assert written.bytes == 6 * 2**20
    assert written.seconds > 0.25


def test_a_quick_restore_draws_nothing(tmp_path: Path) -> None:
    """A restore done before the first redraw leaves the stream untouched."""
    stream = io.StringIO()
    with watching(tmp_path / "app.db", stream=stream, every=5):
        (tmp_path / "app.db").write_bytes(b"x" * 10)
    assert stream.getvalue() == ""


def test_without_a_stream_nothing_is_drawn_but_the_record_is_kept(tmp_path: Path) -> None:
    """No stream (not a terminal): no thread, no output; bytes and seconds still known."""
    before = threading.active_count()
    with watching(tmp_path / "app.db", stream=None, every=0.01) as written:
        assert threading.active_count() == before
        (tmp_path / "app.db").write_bytes(b"x" * 100)
        time.sleep(0.05)
    assert written.bytes == 100 and written.seconds >= 0.05


def test_only_the_restores_own_files_count(tmp_path: Path) -> None:
    """The largest `.<name>.*` file beside the target: not the target, not a neighbour."""
    (tmp_path / "app.db").write_bytes(b"x" * 1000)
    (tmp_path / ".users.db.restoring-1.tmp").write_bytes(b"x" * 500)
    (tmp_path / ".app.db.rewind-7.tmp").write_bytes(b"x" * 300)
    assert in_flight(tmp_path / "app.db") == 300
    assert in_flight(tmp_path / "gone" / "app.db") == 0


def test_the_summary_reads_as_size_time_and_rate() -> None:
    """The line a restore ends with on a terminal."""
    assert Written(bytes=3 * 2**20, seconds=1.5).summary() == "3.0 MiB in 1.5 s, 2.0 MiB/s"


# -- on a terminal, through the command line --------------------------------------------


def _on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the command with stdout on a pseudo-terminal; (exit code, stdout, stderr)."""
    master, slave = os.openpty()
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "asgi_litestream", *args], env=full,
                               stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.stderr is not None
    with process.stderr:
        stderr = process.stderr.read().decode()
    return process.wait(timeout=60), output.decode().replace("\r\n", "\n"), stderr


def _slow_litestream(tmp_path: Path, chunks: int = 8, pause: float = 0.2) -> Path:
    """A stand-in for `litestream` whose restore writes ``<output>.tmp`` a MiB every
    ``pause`` seconds, renames it, and prints restore's JSON when asked."""
    script = tmp_path / "slow-litestream"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys, time
        args = sys.argv[1:]
        if args[:1] == ["version"]:
            print("v0.5.17")
            sys.exit(0)
        output = args[args.index("-o") + 1]
        with open(output + ".tmp", "wb") as file:
            for _ in range({chunks}):
                file.write(b"\\0" * 2**20)
                file.flush()
                time.sleep({pause})
        os.rename(output + ".tmp", output)
        if "-json" in args:
            print(json.dumps({{"txid": "0000000000000007"}}, indent=2))
        """))
    script.chmod(0o755)
    return script


def test_a_long_restore_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal: the progress line is redrawn with \\r while the copy grows, then
    the outcome line ends with its size, time and rate. Piped: the plain line only."""
    db = tmp_path / "app.db"
    args = ("restore", "--database", str(db), "--replica-url", f"file://{tmp_path}/r")
    env = {"ASGI_LITESTREAM_BIN_PATH": str(_slow_litestream(tmp_path))}
    code, out, err = _on_a_terminal(*args, env=env)
    assert code == 0, err
    frames = out.split("\r")
    drawn = [f for f in frames if f.startswith("restoring app.db: ")]
    assert len(drawn) >= 2, out
    assert any(" MiB, " in f for f in drawn), drawn
    assert frames[-1].startswith(f"restored {db} from file://{tmp_path}/r (8.0 MiB in ")
    assert frames[-1].endswith(" MiB/s)\n")
    db.unlink()
    piped = cli(*args, env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == f"restored {db} from file://{tmp_path}/r\n"


@pytest.mark.parametrize("flag", ["--json", "-q"])
def test_no_progress_with_json_or_quiet(tmp_path: Path, flag: str) -> None:
    """--json keeps stdout one document and -q keeps it quiet, even on a terminal."""
    db = tmp_path / "app.db"
    env = {"ASGI_LITESTREAM_BIN_PATH": str(_slow_litestream(tmp_path, chunks=4))}
    code, out, err = _on_a_terminal("restore", "--database", str(db), "--replica-url",
                                    f"file://{tmp_path}/r", flag, env=env)
    assert code == 0, err
    assert "\r" not in out and "restoring" not in out
    if flag == "--json":
        assert json.loads(out)["databases"][0]["txid"] == 7


def test_a_real_restore_on_a_terminal_ends_with_its_size(tmp_path: Path,
                                                          litestream_bin: Path) -> None:
    """With the real binary, the outcome line on a terminal says what it wrote."""
    db = tmp_path / "app.db"
    _write_notes(db, "first")
    _replicate_once(litestream_bin, db, f"file://{tmp_path}/replica")
    code, out, err = _on_a_terminal("restore", "--database", str(db), "--replica-url",
                                    f"file://{tmp_path}/replica",
                                    env={"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin)})
    assert code == 0, err
    size = db.stat().st_size
    assert out.split("\r")[-1].startswith(
        f"restored {db} from file://{tmp_path}/replica ({size / 1024:.1f} KiB in ")


# -- restore --json ------------------------------------------------------------------------


@pytest.fixture
def backed_up(tmp_path: Path, litestream_bin: Path) -> Restore:
    """app.db with a note, replicated to a file:// replica and then deleted."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    _write_notes(db, "first")
    _replicate_once(litestream_bin, db, f"file://{tmp_path}/replica")
    (tmp_path / "tmp").mkdir()
    return Restore(db=db, replica_url=f"file://{tmp_path}/replica", tmpdir=tmp_path / "tmp",
                   env={"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin)})


def test_restore_json_says_what_was_restored(tmp_path: Path, litestream_bin: Path) -> None:
    """One document: per database the outcome, the txid `backups` lists as the last, the
    bytes of the restored file and the seconds; an empty replica is `no_backup`."""
    data = tmp_path / "data"
    data.mkdir()
    app, users = data / "app.db", data / "users.db"
    _write_notes(app, "kept safe")
    _replicate_once(litestream_bin, app, f"file://{tmp_path}/replica/app")
    env = {"ASGI_LITESTREAM_DATABASE": f"{app},{users}",
           "ASGI_LITESTREAM_REPLICA_URL": f"file://{tmp_path}/replica",
           "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin)}
    result = cli("restore", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    restored, fresh = document["databases"]
    listed = json.loads(cli("backups", "--json", "--only", "app.db", env=env).stdout)
    assert restored["txid"] == listed["databases"][0]["restore_points"][-1]["txid"]
    assert restored == {"path": str(app), "replica": f"file://{tmp_path}/replica/app",
                        "outcome": "restored", "txid": restored["txid"],
                        "bytes": app.stat().st_size, "seconds": restored["seconds"],
                        "output": None}
    assert isinstance(restored["seconds"], float) and 0 < restored["seconds"] < 60
    assert fresh == {"path": str(users), "replica": f"file://{tmp_path}/replica/users",
                     "outcome": "no_backup", "txid": None, "bytes": None, "seconds": None,
                     "output": None}
    assert _notes(app) == ["kept safe"]

    again = json.loads(cli("restore", "--json", "--if-db-not-exists", env=env).stdout)
    assert [d["outcome"] for d in again["databases"]] == ["kept", "no_backup"]


def test_restore_json_of_a_rewind_names_its_output(backed_up: Restore) -> None:
    """--output and --txid: the document names the file written and the txid asked."""
    _write_notes(backed_up.db, "third")  # the live database, left alone
    out = backed_up.tmpdir.parent / "old.db"
    result = backed_up.run("--only", "app.db", "--txid", "1", "--output", str(out), "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["databases"]
    assert entry["outcome"] == "restored" and entry["txid"] == 1
    assert entry["output"] == str(out) and entry["bytes"] == out.stat().st_size


def test_restore_json_on_an_error_prints_no_document(backed_up: Restore) -> None:
    """A refusal is an error on stderr and exit 1; stdout stays empty."""
    _write_notes(backed_up.db, "local")
    result = backed_up.run("--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "already exists" in result.stderr


def test_ctrl_c_during_a_restore_leaves_no_partial_file(tmp_path: Path) -> None:
    """Ctrl+C mid-restore: exit 130, and neither the copy nor Litestream's .tmp stays."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "ASGI_LITESTREAM_BIN_PATH": str(_slow_litestream(tmp_path, chunks=50))}
    process = subprocess.Popen(
        [sys.executable, "-m", "asgi_litestream", "restore", "--database", str(db),
         "--replica-url", f"file://{tmp_path}/r"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".tmp") for p in db.parent.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl+C sends
    assert process.wait(timeout=30) == 130
    assert list(db.parent.iterdir()) == []
