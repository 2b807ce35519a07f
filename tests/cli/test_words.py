"""Errors in the command line's words: the flag or the variable the value came from, and
fixes spelled as a command line, never the middleware's ``keyword='value'``."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from asgi_litestream._cli.main import _parser
from asgi_litestream._cli.words import Words, describe, respell
from asgi_litestream._exceptions import BinaryNotFoundError, ConfigError
from tests.cli.test_cli import ROOT, cli


def _words(*argv: str, environ: dict[str, str] | None = None) -> Words:
    return Words.of(_parser().parse_args(list(argv)), environ or {})


# -- the parts, respelled ------------------------------------------------------------


def test_the_middleware_message_is_unchanged() -> None:
    """ConfigError keeps its keyword message for the middleware, and its parts for others."""
    error = ConfigError("database", None, "is required", "pass database='app.db'")
    assert str(error) == "database=None: is required. Fix: pass database='app.db'"
    assert (error.option, error.value, error.problem, error.fix) == (
        "database", None, "is required", "pass database='app.db'")


def test_a_missing_option_is_named_as_the_flag() -> None:
    """Neither flag nor variable gave it: the flag, and the fix as a command line."""
    error = ConfigError("database", None, "is required",
                        "pass database='app.db' or set ASGI_LITESTREAM_DATABASE")
    assert describe(error, _words("config")) == (
        "--database: is required. Fix: pass --database app.db or set ASGI_LITESTREAM_DATABASE")


def test_a_value_from_the_environment_is_named_as_its_variable() -> None:
    """The variable that gave the value is named, in a shell's spelling."""
    error = ConfigError("replica_url", "ftp://h/x", "is not supported", "use s3://")
    words = _words("config", environ={"ASGI_LITESTREAM_REPLICA_URL": "ftp://h/x"})
    assert describe(error, words) == (
        "ASGI_LITESTREAM_REPLICA_URL=ftp://h/x: is not supported. Fix: use s3://")
    # A flag wins over the variable, so then the flag gave it.
    flagged = _words("config", "--replica-url", "ftp://h/x",
                     environ={"ASGI_LITESTREAM_REPLICA_URL": "s3://b/x"})
    assert describe(error, flagged).startswith("--replica-url ftp://h/x: ")


def test_several_databases_read_as_the_command_line_gave_them() -> None:
    """A list value is repeated flags, or the comma-separated variable."""
    error = ConfigError("database", ["/a/x.db", "/b/x.db"], "share a stem", "rename them")
    assert describe(error, _words("config", "--database", "/a/x.db", "--database",
                                  "/b/x.db")).startswith(
        "--database /a/x.db --database /b/x.db: share a stem")
    env = {"ASGI_LITESTREAM_DATABASE": "/a/x.db,/b/x.db"}
    assert describe(error, _words("config", environ=env)).startswith(
        "ASGI_LITESTREAM_DATABASE=/a/x.db,/b/x.db: share a stem")


def test_an_unparsable_variable_also_offers_the_flag() -> None:
    """A variable that does not parse is named; the fix adds the flag that would win."""
    error = ConfigError("ASGI_LITESTREAM_STOP_TIMEOUT", "soon", "not a number",
                        "fix or unset the environment variable")
    assert describe(error, _words("config")) == (
        "ASGI_LITESTREAM_STOP_TIMEOUT=soon: not a number. Fix: fix or unset the environment "
        "variable, or pass --stop-timeout (a flag wins over the variable)")


@pytest.mark.parametrize(("text", "spoken"), [
    ("drop database=, or config_path=", "drop --database, or --config-path"),
    ("is also given by config_path='/x/l.yml'", "is also given by --config-path /x/l.yml"),
    ("pass download=False", "pass --no-download"),
    ("pass replica_url='s3://b/my app'", "pass --replica-url 's3://b/my app'"),
    ("point bin_path (env ASGI_LITESTREAM_BIN_PATH) at it",
     "point --bin-path (or ASGI_LITESTREAM_BIN_PATH) at it"),
    # No flag on this command: the variable.
    ("drop lease= on the followers", "drop ASGI_LITESTREAM_LEASE on the followers"),
    ("or restore_if_missing=False", "or ASGI_LITESTREAM_RESTORE_IF_MISSING=0"),
    # Keyword only: nothing a command line could say instead.
    ("pass dashboard_auth=<function>", "pass dashboard_auth=<function>"),
    # Litestream's own fields are not ours to respell.
    ('failed: level=ERROR database=/a.db txid=0000000000000005 msg="timestamp="',
     'failed: level=ERROR database=/a.db txid=0000000000000005 msg="timestamp="'),
])
def test_keyword_spellings_are_respelled(text: str, spoken: str) -> None:
    """`name=`, `name='value'`, `name=False` and `name (env VAR)` become the flag or the
    variable; anything else is left as written."""
    assert respell(text, _words("restore")) == spoken


def test_a_variable_that_gave_the_value_is_the_fix_too() -> None:
    """When the variable gave the value, the fix points at the variable, not the flag."""
    words = _words("restore", environ={"ASGI_LITESTREAM_BIN_PATH": "/bin/true"})
    assert respell("point bin_path (env ASGI_LITESTREAM_BIN_PATH) at it", words) == (
        "point ASGI_LITESTREAM_BIN_PATH at it")


def test_flags_of_another_command_are_not_offered() -> None:
    """`download` takes --cache-dir; `restore` does not, so it names the variable."""
    text = "pass a writable cache_dir= (env ASGI_LITESTREAM_CACHE_DIR)"
    assert respell(text, _words("download")) == (
        "pass a writable --cache-dir (or ASGI_LITESTREAM_CACHE_DIR)")
    assert respell(text, _words("restore")) == "pass a writable ASGI_LITESTREAM_CACHE_DIR"


def test_plain_errors_are_respelled_too() -> None:
    """An error that is not a ConfigError gets the same spellings."""
    error = BinaryNotFoundError("bin_path='/opt/ls' does not exist. Fix: point bin_path "
                                "(env ASGI_LITESTREAM_BIN_PATH) at it.")
    assert describe(error, _words("restore", "--bin-path", "/opt/ls")) == (
        "--bin-path /opt/ls does not exist. Fix: point --bin-path (or "
        "ASGI_LITESTREAM_BIN_PATH) at it.")


def test_every_settings_error_has_words() -> None:
    """Each option the settings flags cover can be named on every settings command."""
    for command in ("config", "restore", "backups", "verify"):
        words = _words(command)
        for name in ("database", "replica_url", "config_path", "bin_path", "sync_interval",
                     "if_behind", "role", "lease", "name"):
            assert words.name(name) is not None, (command, name)


# -- through the command line --------------------------------------------------------


def _not_litestream(tmp_path: Path) -> Path:
    script = tmp_path / "not-litestream"
    script.write_text("#!/bin/sh\necho 'hello'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize(("case", "argv", "env", "said"), [
    ("missing", ["config", "--replica-url", "file:///r"], {},
     "error: --database: is required. Fix: pass --database app.db or set "
     "ASGI_LITESTREAM_DATABASE\n"),
    ("env", ["config", "--database", "{tmp}/app.db"],
     {"ASGI_LITESTREAM_REPLICA_URL": "ftp://host/x"},
     "error: ASGI_LITESTREAM_REPLICA_URL=ftp://host/x: scheme 'ftp' is not one"),
    ("both", ["config", "--config-path", "{tmp}/l.yml", "--database", "{tmp}/app.db"], {},
     "error: --database: is also given by --config-path {tmp}/l.yml. Fix: drop "
     "--database, or --config-path, not keep both\n"),
    ("choice", ["config", "--database", "{tmp}/app.db", "--replica-url", "file:///r",
                "--if-behind", "sometimes"], {},
     "error: --if-behind sometimes: must be one of ('restore', 'fail')"),
    ("not-litestream", ["restore", "--database", "{tmp}/app.db", "--replica-url",
                        "file:///r", "--bin-path", "{tmp}/not-litestream"], {},
     "error: --bin-path {tmp}/not-litestream: is not Litestream"),
    ("not-litestream-env", ["restore", "--database", "{tmp}/app.db", "--replica-url",
                            "file:///r"],
     {"ASGI_LITESTREAM_BIN_PATH": "{tmp}/not-litestream"},
     "error: ASGI_LITESTREAM_BIN_PATH={tmp}/not-litestream: is not Litestream"),
    ("only", ["restore", "--database", "{tmp}/app.db", "--replica-url", "file:///r",
              "--only", "nope.db"], {},
     "error: --only nope.db: is not one of the configured databases"),
    ("timestamp", ["restore", "--database", "{tmp}/app.db", "--replica-url",
                   "file:///r", "--timestamp", "yesterday", "--output", "{tmp}/old.db"], {},
     "error: --timestamp yesterday: is not an RFC 3339 time"),
    ("dashboard", ["config", "--database", "{tmp}/app.db", "--replica-url", "file:///r"],
     {"ASGI_LITESTREAM_DASHBOARD_PATH": "/ops"},
     "error: ASGI_LITESTREAM_DASHBOARD_PATH=/ops: the status page needs an authorization"),
])
def test_misconfigurations_are_said_in_the_command_lines_words(
        tmp_path: Path, litestream_bin: Path, case: str, argv: list[str],
        env: dict[str, str], said: str) -> None:
    """Real misconfigurations through `asgi-litestream`: exit 1, one line on stderr naming
    the flag or the variable as given, with its value and the fix, and no keyword."""
    (tmp_path / "l.yml").write_text(f"dbs: [{{path: {tmp_path}/x.db, replica: {{url: "
                                    f"'file:///r'}}}}]\n")
    _not_litestream(tmp_path)
    env = {"ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
           **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    result = cli(*[a.format(tmp=tmp_path) for a in argv], env=env)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert f"asgi-litestream: {said.format(tmp=tmp_path)}" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    for keyword in ("database=", "replica_url=", "config_path=", "bin_path=", "if_behind=",
                    "timestamp="):
        assert keyword not in result.stderr


def test_verify_names_the_flag_and_exits_2(tmp_path: Path) -> None:
    """`verify` that cannot check says why in the command line's words, and exits 2,
    never 1 (a replica that did not verify)."""
    result = cli("verify", "--database", str(tmp_path / "app.db"),
                 "--replica-url", "ftp://host/x")
    assert result.returncode == 2
    assert "asgi-litestream: error: --replica-url ftp://host/x: scheme 'ftp'" in result.stderr


def test_the_docs_show_what_the_command_line_says() -> None:
    """The misconfigurations on docs/cli.md print exactly the lines shown there."""
    page = (ROOT / "docs" / "cli.md").read_text().splitlines()
    start = page.index("<!-- illustration: stderr of three misconfigurations -->") + 2
    block = page[start:page.index("```", start)]
    shown = [(line[2:], said) for line, said in zip(block[::2], block[1::2], strict=True)]
    assert len(shown) == 3
    for line, said in shown:
        words = shlex.split(line)
        env = dict(w.split("=", 1) for w in words[:words.index("asgi-litestream")])
        argv = words[words.index("asgi-litestream") + 1:]
        result = cli(*argv, env=env)
        assert result.returncode == 1
        assert result.stderr == said + "\n"
