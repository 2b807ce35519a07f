"""`--help` on every command ends with examples that parse and with its exit statuses;
the main help lists the exit statuses of all commands."""

from __future__ import annotations

import argparse
import shlex

import pytest

from asgi_litestream._cli.main import _parser
from asgi_litestream._cli.manual import EXITS, MANUALS
from tests.cli.test_cli import cli

COMMANDS = sorted(MANUALS)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_manual() -> None:
    """No command without examples and exit statuses, no manual without its command."""
    assert sorted(_subparsers()) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_examples_and_exit_statuses(command: str) -> None:
    """`asgi-litestream COMMAND --help` exits 0 and ends with its examples, then one row
    per exit status, codes in order."""
    result = cli(command, "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    examples = text.index("\nexamples:\n")
    statuses = text.index("\nexit status:\n")
    assert examples < statuses
    assert f"\n  asgi-litestream {command}" in text[examples:statuses]
    rows = [line.split()[0] for line in text[statuses:].splitlines()[1:]
            if line.startswith("  ") and line.split()[0].isdigit()]
    assert rows == [str(code) for code, _ in MANUALS[command].exits]
    assert rows[:1] == ["0"] and "130" in rows


def test_main_help_lists_every_exit_status() -> None:
    """The main --help tells what each exit status means, whichever the command."""
    result = cli("--help", env={"COLUMNS": "100"})
    assert result.returncode == 0
    for code, meaning in EXITS:
        assert f"  {code:<5}{meaning.split()[0]}" in result.stdout, code


@pytest.mark.parametrize(("command", "example"), [
    (name, line) for name in COMMANDS for _, line in MANUALS[name].examples])
def test_every_example_parses(command: str, example: str) -> None:
    """Each example runs the command it documents with flags the parser takes (shell
    variables before it, and a pipe or a redirection after it, set aside)."""
    words = shlex.split(example)
    words = words[next(i for i, w in enumerate(words) if w == "asgi-litestream") + 1:]
    ends = [i for i, w in enumerate(words) if w in ("|", "||", ">", "&&")]
    argv = words[:ends[0]] if ends else words
    assert argv[0] == command
    _parser().parse_args(argv)  # SystemExit(2) on an unknown flag or a bad value


def test_descriptions_are_wrapped_to_the_terminal() -> None:
    """Raw help keeps the examples' lines; the prose is still wrapped to the terminal."""
    result = cli("restore", "--help", env={"COLUMNS": "60"})
    prose = result.stdout.split("\n\n")[1]
    assert prose.startswith("Restore every configured database")
    assert max(len(line) for line in prose.splitlines()) <= 58
