"""The generated parts of the documentation, built from the package itself.

Each lives in a page between ``<!-- gen:NAME -->`` and ``<!-- /gen:NAME -->``:

- ``options``  (docs/options.md): the options table, from ``_config/options.py``;
- ``cli``      (docs/cli.md): every command and flag, from the CLI's argparse parser;
- ``modules``  (docs/how-it-works.md): the module map, each module's docstring summary,
  grouped by folder in layer order (``[tool.importlinter]`` in pyproject.toml).

``python docs/gen.py`` rewrites them; ``python docs/gen.py --check`` exits 1 when a page
is out of step (tests/test_docs.py asserts the same).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "asgi_litestream"
REGENERATE = "python docs/gen.py"
_ROOT_PROG = "asgi-litestream"

# The options' meanings were written for one long README; on the site each section is
# a page of its own.
_PAGES = {
    "#many-databases": "many-databases.md",
    "#rotating-credentials": "rotating-credentials.md",
    "#read-replicas": "read-replicas.md",
    "#rolling-deploys-across-hosts": "rolling-deploys.md",
    "#metrics": "metrics-and-status-page.md#metrics",
    "#status-page": "metrics-and-status-page.md#status-page",
    "#who-sees-what": "status-and-kubernetes.md#who-sees-what",
    "#health-readiness-versus-alerting":
        "status-and-kubernetes.md#health-readiness-versus-alerting",
    "#using-your-apps-database-object": "options.md#using-your-apps-database-object",
    "#restore-on-boot": "restore-and-rewind.md#restore-on-boot",
    "#verify-prove-that-the-backup-restores":
        "restore-and-rewind.md#verify-prove-that-the-backup-restores",
}


def options_table() -> str:
    """The options table (``readme_table()``), its links pointed at the site's pages."""
    sys.path.insert(0, str(ROOT))
    from asgi_litestream._config.options import readme_table

    def page(match: re.Match[str]) -> str:
        anchor = match.group(1)
        if anchor not in _PAGES:
            raise KeyError(f"options.py links to {anchor!r}: add its page to _PAGES in "
                           f"docs/gen.py")
        return f"]({_PAGES[anchor]})"

    return re.sub(r"\]\((#[^)]+)\)", page, readme_table())


def cli_reference() -> str:
    """Each command of ``asgi-litestream`` with its flags, read from the parser."""
    sys.path.insert(0, str(ROOT))
    from asgi_litestream._cli.main import _parser
    from asgi_litestream._cli.manual import EXITS, MANUALS

    parser = _parser()
    out = [f"`{parser.prog} [-q] [--version] COMMAND ...`: {_help(parser, parser.description)} "
           "`-h` after any command prints its help, its examples and its exit statuses; "
           "`-q` may also follow the command.",
           "", _flags(parser, [a for a in parser._actions
                                if not isinstance(a, argparse._SubParsersAction)]),
           "", "Exit statuses, whichever the command:", "", _exits(EXITS)]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    settings: tuple[list[str], list[argparse.Action]] = ([], [])
    for name, sub in commands.choices.items():
        own: list[argparse.Action] = []
        for group in sub._action_groups:
            if group.title and group.title.startswith("settings"):
                settings[0].append(name)
                settings[1][:] = group._group_actions
            else:
                own += [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        positional = " ".join(a.metavar or a.dest.upper() for a in own if not a.option_strings)
        out += ["", f"### `{name}`", "", _help(sub, sub.description), "",
                f"`{parser.prog} {name}{' ' + positional if positional else ''} [flags]`"
                + (" and the [settings flags](#settings-flags)" if name in settings[0] else ""),
                "", _flags(sub, own), "", "Examples:", "", "```bash",
                *[line for comment, command in MANUALS[name].examples
                  for line in (f"# {comment}", command)],
                "```", "", "Exit statuses:", "", _exits(MANUALS[name].exits)]
    out += ["", "### Settings flags", "",
            "Taken by " + ", ".join(f"`{n}`" for n in settings[0]) + ": one per option "
            "that declares a flag ([Options](options.md)); a flag wins over its "
            "`ASGI_LITESTREAM_*` variable. Credentials are never flags.", "",
            _flags(commands.choices[settings[0][0]], settings[1])]
    return "\n".join(out)


def _help(parser: argparse.ArgumentParser, text: str | None) -> str:
    # The parser wraps its prose to the terminal; the page has one line per paragraph.
    return _markdown(" ".join((text or "").split()).replace("%(prog)s", parser.prog))


def _exits(exits: tuple[tuple[int, str], ...]) -> str:
    return "\n".join(["| exit | meaning |", "|---|---|",
                      *(f"| `{code}` | {_markdown(meaning)} |" for code, meaning in exits)])


def _markdown(text: str) -> str:
    """Plain help text, safe in Markdown: no stray emphasis, no broken table cell."""
    return text.replace("*", "\\*").replace("|", "\\|")


def _flags(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    formatter = parser._get_formatter()
    rows = ["| argument | meaning |", "|---|---|"]
    for action in actions:
        if isinstance(action, argparse._HelpAction) or (
                parser.prog != _ROOT_PROG and action.dest == "quiet"):
            continue  # -h everywhere; -q is the root's, also taken after the command
        if action.option_strings:
            shown = ", ".join(
                s + (f" {formatter._format_args(action, action.dest.upper())}"
                     if action.nargs != 0 else "")
                for s in action.option_strings)
        else:
            shown = action.metavar or action.dest.upper()
        meaning = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{shown}` | {_markdown(meaning)} |")
    return "\n".join(rows)


def module_map() -> str:
    """Every module with the summary of its docstring, one table per folder."""
    order = _layers()
    folders: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        folders.setdefault(folder, []).append(path)
    ranked = sorted(folders, key=lambda f: (f != "", order.get(f, len(order)), f))
    out: list[str] = []
    for folder in ranked:
        paths = folders[folder]
        init = PACKAGE / folder / "__init__.py"
        title = "top level" if not folder else f"`{folder}/`"
        out += [f"### {title}", ""]
        if folder:
            out += [_summary(init), ""]
        out += ["| module | holds |", "|---|---|"]
        for path in paths:
            if folder and path == init:
                continue
            out.append(f"| `{path.stem}` | {_summary(path)} |")
        out.append("")
    return "\n".join(out).rstrip()


def _summary(path: Path) -> str:
    """The docstring's first paragraph on one line (reST literals as Markdown code)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{path.relative_to(ROOT)} has no docstring: say what it holds")
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?\.?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|")


def _layers() -> dict[str, int]:
    """Folder -> rank, highest layer first, from ``[tool.importlinter]``'s layers."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^layers = \[(.*?)^\]", text, re.S | re.M)
    names = re.findall(r"[\w.]+", " ".join(re.findall(r'"([^"]*)"', block.group(1)))) \
        if block else []
    return {name: rank for rank, name in enumerate(names)}


GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "options": ("options.md", options_table),
    "cli": ("cli.md", cli_reference),
    "modules": ("how-it-works.md", module_map),
}


def region(text: str, name: str) -> tuple[int, int]:
    """Where the generated part ``name`` sits in ``text`` (between its markers)."""
    start, end = f"<!-- gen:{name} -->", f"<!-- /gen:{name} -->"
    begin = text.index(start) + len(start)
    return begin, text.index(end, begin)


def rendered(name: str) -> tuple[Path, str, str]:
    """The page, its generated part as it is, and as the source says it should be."""
    page, build = GENERATED[name]
    path = DOCS / page
    text = path.read_text(encoding="utf-8")
    begin, end = region(text, name)
    return path, text[begin:end], f"\n{build()}\n"


def main(argv: list[str]) -> int:
    os.environ.setdefault("COLUMNS", "100")
    stale = []
    for name in GENERATED:
        path, current, wanted = rendered(name)
        if current == wanted:
            continue
        stale.append(path.name)
        if "--check" not in argv:
            text = path.read_text(encoding="utf-8")
            begin, end = region(text, name)
            path.write_text(text[:begin] + wanted + text[end:], encoding="utf-8")
    if stale and "--check" in argv:
        print(f"out of step: {', '.join(stale)}; run {REGENERATE}", file=sys.stderr)  # noqa: T201
        return 1
    for page in stale:
        print(f"rewrote docs/{page}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
