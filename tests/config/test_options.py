"""Options are declared once (_config/options.py): the middleware, Settings, the CLI and the
Options page's table (docs/options.md) all agree with that list."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from asgi_litestream import LitestreamLifespan, Settings
from asgi_litestream._cli.main import _parser
from asgi_litestream._config.options import DEFAULT, OPTION_NAMES, OPTIONS, readme_table

OPTIONS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def test_the_middleware_takes_exactly_the_declared_options() -> None:
    """Every declared option is a keyword of LitestreamLifespan, in the same order,
    unset by default (so that the environment applies)."""
    parameters = list(inspect.signature(LitestreamLifespan).parameters.values())[1:]
    assert [p.name for p in parameters] == list(OPTION_NAMES)
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters)
    assert all(p.default in (None, DEFAULT) for p in parameters)


def test_settings_has_a_field_per_option_with_its_declared_default() -> None:
    """Settings' defaults are the declared ones (database and replica_url become
    `databases`; max_lag is derived)."""
    fields = Settings.__dataclass_fields__
    for option in OPTIONS:
        if option.name in ("database", "replica_url", "max_lag"):
            continue
        assert fields[option.name].default == option.default, option.name
    assert set(fields) == (set(OPTION_NAMES) - {"database", "replica_url"}) | {
        "databases", "file_config", "credentials_source"}


def test_unknown_option_is_refused() -> None:
    """A misspelt option is an error, never silently ignored."""
    try:
        Settings.from_options(environ={}, databse="app.db")
    except TypeError as exc:
        assert "databse" in str(exc)
    else:
        raise AssertionError("accepted an unknown option")


def test_the_options_page_table_is_the_declared_one() -> None:
    """docs/options.md's table is `python -m asgi_litestream._config.options`, row for row
    (its links pointed at the site's pages: tests/test_docs.py checks the whole of it)."""
    page = OPTIONS_PAGE.read_text()
    for row in readme_table().splitlines():
        assert re.sub(r"\]\(#[^)]+\)", "", row) in re.sub(r"\]\([^)#]*#?[^)]*\)", "", page)


def test_cli_flags_are_the_options_that_declare_one() -> None:
    """`config` and `restore` take one flag per option that declares a flag."""
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for command in ("config", "restore"):
        flags = {s for a in subparsers.choices[command]._actions for s in a.option_strings
                 if s.startswith("--") and not s.startswith("--no-")}
        declared = {"--" + o.name.replace("_", "-") for o in OPTIONS if o.flag}
        assert declared <= flags
        assert not {f for f in flags - declared
                    if re.sub("^--", "", f).replace("-", "_") in OPTION_NAMES}
