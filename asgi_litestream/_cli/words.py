"""Errors in the command line's words: ``--database app.db``, or the variable the value
came from, where the middleware says ``database='app.db'``.

A :class:`ConfigError` carries its parts (option, value, problem, fix): the option is
named here as this command line takes it, and the keyword spellings in the problem and
the fix (``name='value'``, ``name=``, ``name (env VAR)``) are respelled the same way.
Other errors are plain text: only those spellings are respelled in them, never
Litestream's own ``key=value`` log fields.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from .._config.options import OPTIONS
from .._exceptions import ConfigError, LitestreamError
from .._litestream.replica_errors import explain

_BY_NAME = {option.name: option for option in OPTIONS}
_BY_ENV = {option.env: option for option in OPTIONS}
# Namespace entries that are not flags.
_NOT_FLAGS = frozenset({"run", "command", "url"})
_PLACEHOLDER = "..."  # "given elsewhere": ConfigError's value when it is not the point


@dataclass(frozen=True, slots=True)
class Words:
    """How one command line names things: its flags, the ones given, the environment."""

    flags: frozenset[str]  # the dests this command takes as --flags
    given: frozenset[str]  # options whose value came from a flag on this command line
    environ: Mapping[str, str]

    @classmethod
    def of(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Words:
        names = vars(args)
        flags = frozenset(name for name in names if name not in _NOT_FLAGS)
        given = frozenset(name for name in flags & _BY_NAME.keys()
                          if names[name] is not None)
        return cls(flags=flags, given=given, environ=environ)

    def flag(self, name: str) -> str | None:
        return "--" + name.replace("_", "-") if name in self.flags else None

    def from_env(self, name: str) -> bool:
        """The value of option ``name`` was read from its ASGI_LITESTREAM_* variable."""
        option = _BY_NAME.get(name)
        return (option is not None and option.kind != "secret" and name not in self.given
                and option.env in self.environ)

    def env(self, name: str) -> str | None:
        option = _BY_NAME.get(name)
        if option is None or option.kind in ("secret", "callable"):
            return None
        return option.env

    def name(self, name: str) -> str | None:
        """``--flag`` or ``ASGI_LITESTREAM_VAR``, whichever the value came from (the flag
        when neither gave it and the command takes one); None when the command line has
        no word for it."""
        if self.from_env(name):
            return self.env(name)
        return self.flag(name) or self.env(name)

    def setting(self, name: str, value: object) -> str | None:
        """``name`` set to ``value`` as a command line says it: ``--database app.db``,
        ``--no-download``, ``ASGI_LITESTREAM_LEASE=1``."""
        spelled = self.name(name)
        if spelled is None:
            return None
        if spelled.startswith("--"):
            option = _BY_NAME.get(name)
            if isinstance(value, bool) and option is not None and option.kind == "bool":
                return spelled if value else "--no-" + spelled[2:]
            if isinstance(value, list):
                return " ".join(f"{spelled} {_quote(item)}" for item in value)
            return f"{spelled} {_quote(value)}"
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, list):
            value = ",".join(str(item) for item in value)
        return f"{spelled}={_quote(value)}"


def describe(error: LitestreamError, words: Words) -> str:
    """The one line (or paragraph) the command prints after ``asgi-litestream: error:``."""
    if isinstance(error, ConfigError):
        return _config_error(error, words)
    return respell(explain(error), words)


def _config_error(error: ConfigError, words: Words) -> str:
    problem, fix = respell(error.problem, words), respell(error.fix, words)
    option = _BY_ENV.get(error.option)
    if option is not None:  # a variable that could not even be parsed
        subject = f"{error.option}={_quote(error.value)}"
        flag = words.flag(option.name)
        if flag is not None:
            fix += f", or pass {flag} (a flag wins over the variable)"
        return f"{subject}: {problem}. Fix: {fix}"
    named = (words.name(error.option) if error.value is None or error.value == _PLACEHOLDER
             else words.setting(error.option, error.value))
    if named is None:  # no word for it here: the keyword, as the library says it
        return str(error)
    return f"{named}: {problem}. Fix: {fix}"


# `name (env VAR)`, `name= (env VAR)`: both spellings in one; `name='value'`: Python's repr
# (Litestream's fields are `key=value` or `key="value"`, never single-quoted); `name=`
# alone; `name=True`.
_ENV_NOTE = re.compile(r"\b(?P<name>[a-z][a-z0-9_]*)=? \(env (?P<env>[A-Z][A-Z0-9_]*)\)")
_QUOTED = re.compile(r"\b(?P<name>[a-z][a-z0-9_]*)='(?P<value>[^']*)'")
_BARE = re.compile(r"\b(?P<name>[a-z][a-z0-9_]*)=(?P<value>True|False)?(?=[\s,.;:)]|$)")


def respell(text: str, words: Words) -> str:
    """``text`` with the library's keyword spellings in this command line's words."""

    def env_note(match: re.Match[str]) -> str:
        flag = words.flag(match["name"])
        if words.from_env(match["name"]) or flag is None:
            return match["env"]
        return f"{flag} (or {match['env']})"

    def quoted(match: re.Match[str]) -> str:
        return words.setting(match["name"], match["value"]) or match[0]

    def bare(match: re.Match[str]) -> str:
        if match["value"] is None:
            return words.name(match["name"]) or match[0]
        return words.setting(match["name"], match["value"] == "True") or match[0]

    return _BARE.sub(bare, _QUOTED.sub(quoted, _ENV_NOTE.sub(env_note, text)))


def _quote(value: object) -> str:
    return shlex.quote(str(value))
