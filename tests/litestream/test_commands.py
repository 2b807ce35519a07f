"""The one builder of `litestream` command lines, and the one parent-death wrapper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from asgi_litestream._litestream import commands
from asgi_litestream._litestream.commands import (
    ltx_command,
    replicate_command,
    restore_command,
    with_parent_death,
)

BIN = Path("/bin/litestream")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_every_command_is_wrapped_for_a_parent_death_signal() -> None:
    """replicate, restore and ltx alike run under setpriv --pdeathsig (or the shim)."""
    for command in (replicate_command(BIN, Path("/d/l.yml")),
                    restore_command(BIN, output=Path("/d/o.db"), replica_url="file:///r"),
                    ltx_command(BIN, replica_url="file:///r")):
        assert command[:4] == [commands.find_setpriv(), "--pdeathsig", "TERM", "--"] or (
            command[:2] == [sys.executable, "-I"])
        assert str(BIN) in command


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_without_setpriv_the_python_shim_execs_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No setpriv: the interpreter sets the signal, checks its parent, then execs."""
    monkeypatch.setattr(commands, "find_setpriv", lambda: None)
    command = with_parent_death(["/bin/litestream", "version"])
    assert command[:4] == [sys.executable, "-I", "-S", "-c"]
    assert command[-2:] == ["/bin/litestream", "version"]


def test_a_restore_names_the_replica_through_the_config_file() -> None:
    """-config FILE and the database's path: no URL in argv; flags before the path."""
    command = restore_command(BIN, output=Path("/d/.o"), config_path=Path("/d/l.yml"),
                              database=Path("/d/app.db"), if_replica_exists=True,
                              dry_run=True, json=True, txid=255)
    tail = command[command.index(str(BIN)):]
    assert tail == [str(BIN), "restore", "-config", "/d/l.yml", "-if-replica-exists",
                    "-dry-run", "-json", "-txid", "00000000000000ff", "-o", "/d/.o",
                    "/d/app.db"]


def test_ltx_lists_every_level_as_json_by_default() -> None:
    """`ltx -level all -json`, or one level as a table."""
    listing = ltx_command(BIN, config_path=Path("/d/l.yml"), database=Path("/d/a.db"))
    assert listing[-8:] == [str(BIN), "ltx", "-config", "/d/l.yml", "-level", "all", "-json",
                            "/d/a.db"]
    table = ltx_command(BIN, level=0, json=False, replica_url="s3://b/p")
    assert table[-4:] == ["ltx", "-level", "0", "s3://b/p"]


@pytest.mark.parametrize("kwargs", [
    {"replica_url": "sftp://user:hunter2@host/backups"},  # a password in argv
    {"config_path": Path("/d/l.yml")},  # which database?
    {},  # no replica at all
    {"replica_url": "file:///r", "txid": 1, "timestamp": "2026-01-01T00:00:00Z"},
])
def test_unsafe_or_incomplete_command_lines_are_refused(kwargs: dict[str, object]) -> None:
    """A password never reaches the process list; a command must name its replica and
    at most one point in time."""
    with pytest.raises(ValueError):
        restore_command(BIN, output=Path("/d/o.db"), **kwargs)  # type: ignore[arg-type]
