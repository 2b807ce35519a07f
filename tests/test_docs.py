"""The documentation tells the truth: its generated parts are in step with the package,
every code block in docs/ and the README is run or checked (or marked as an illustration
on purpose), and the README stays a two-minute read that keeps the two commands."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


def _load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_gen()


# -- generated parts -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gen.GENERATED))
def test_generated_part_is_in_step_with_its_source(name: str) -> None:
    """The options table, the command-line reference and the module map are exactly what
    the package generates today."""
    path, current, wanted = gen.rendered(name)
    assert current == wanted, (
        f"docs/{path.name} is out of step with the package ({name}). "
        f"Regenerate it: {gen.REGENERATE}")


def test_the_module_map_names_every_module() -> None:
    """A module added in any folder shows up in the map, with its folder."""
    page = (ROOT / "docs" / "how-it-works.md").read_text()
    for path in (ROOT / "asgi_litestream").rglob("*.py"):
        if path.name != "__init__.py":
            assert f"| `{path.stem}` |" in page, path
    for folder in (p for p in (ROOT / "asgi_litestream").iterdir() if (p / "__init__.py").exists()):
        assert f"### `{folder.name}/`" in page, folder


def test_the_options_page_lists_every_option() -> None:
    """Every declared option has its row on the Options page, links pointed at pages."""
    from asgi_litestream._config.options import OPTIONS

    page = (ROOT / "docs" / "options.md").read_text()
    for option in OPTIONS:
        assert f"| `{option.name}` |" in page, option.name
    assert "](#" not in gen.options_table()  # README anchors would be dead on the site


def test_the_cli_page_lists_every_command_and_flag() -> None:
    """Each command of the parser has its section, and each of its flags a row."""
    from asgi_litestream._cli.main import _parser

    page = (ROOT / "docs" / "cli.md").read_text()
    commands = next(a for a in _parser()._actions if a.dest == "command")
    for name, sub in commands.choices.items():  # type: ignore[attr-defined]
        assert f"### `{name}`" in page, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--quiet"):
                    assert f"`{flag}" in page or f", {flag}" in page, (name, flag)


# -- code blocks -------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<lang>[\w+-]*)\s*$")
_MARK = re.compile(r"^\s*<!-- (?P<mark>illustration|run|diagram)\b[^>]*-->\s*$")
_SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<start>\d*):(?P<end>\d*))?"$')


@dataclass(frozen=True)
class Block:
    where: str  # file:line
    lang: str
    mark: str | None  # illustration, run, diagram, or None: checked by its language
    code: str


def _blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the marker on the line before it;
    a snippet include (--8<--) is replaced by the file it names, as the site shows it."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        mark = _MARK.match(lines[i - 1]) if i else None
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        i += 1
        while not lines[i].strip() == fence:
            body.append(lines[i][indent:])
            i += 1
        found.append(Block(f"{path.relative_to(ROOT)}:{i - len(body)}", opening["lang"],
                           mark["mark"] if mark else None, _included("\n".join(body))))
        i += 1
    return found


def _included(code: str) -> str:
    match = _SNIPPET.match(code.strip())
    if not match:
        return code
    text = (ROOT / match["path"]).read_text().splitlines()
    start = int(match["start"] or 1) - 1
    end = int(match["end"]) if match["end"] else len(text)
    return "\n".join(text[start:end])


BLOCKS = [block for path in [README, *PAGES] for block in _blocks(path)]


def test_the_harness_finds_the_blocks() -> None:
    """Blocks of every kind are found (a parser that finds none would pass everything)."""
    kinds = {(b.lang, b.mark) for b in BLOCKS}
    assert {("python", "run"), ("python", None), ("bash", None), ("yaml", None),
            ("mermaid", "diagram")} <= kinds
    assert len(BLOCKS) > 40


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_code_block_is_checked_or_an_illustration(block: Block, tmp_path: Path) -> None:
    """`<!-- run -->` python blocks execute in a fresh interpreter; other python compiles,
    bash passes `bash -n`, YAML and JSON parse, mermaid names a diagram type; anything else
    must be marked `<!-- illustration -->` on the line before it."""
    if block.mark == "illustration":
        return
    if block.mark == "diagram":
        assert block.lang == "mermaid", block.where
        assert block.code.split()[0] in ("sequenceDiagram", "flowchart", "stateDiagram-v2")
        return
    if block.mark == "run":
        assert block.lang == "python", f"{block.where}: only python blocks are run"
        done = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, f"{block.where} failed:\n{done.stderr[-3000:]}"
    elif block.lang == "python":
        compile(block.code, block.where, "exec", flags=_TOP_LEVEL_AWAIT, dont_inherit=True)
    elif block.lang in ("bash", "sh"):
        done = subprocess.run(["bash", "-n"], input=block.code, capture_output=True,
                              text=True, timeout=10)
        assert done.returncode == 0, f"{block.where}: {done.stderr}"
    elif block.lang == "yaml":
        list(yaml.safe_load_all(block.code))
    elif block.lang == "json":
        json.loads(block.code)
    else:
        pytest.fail(f"{block.where}: a ```{block.lang} block that nothing checks: check it "
                    "here, or mark it <!-- illustration --> on the line before")


_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT: recipes await at the top


# -- the README ----------------------------------------------------------------------


def test_the_readme_reads_in_two_minutes() -> None:
    """The README stays short: the rest is in docs/."""
    assert len(README.read_text().splitlines()) < 150


def test_the_readme_keeps_the_two_commands_and_ci_runs_the_test_one() -> None:
    """Run the example and run the whole suite, verbatim; .ci/run calls the second."""
    readme = README.read_text()
    assert "```bash\nbash examples/fastapi_app/run.sh\n" in readme
    assert "```bash\nbash tests/run.sh\n```" in readme
    assert re.search(r"^bash tests/run\.sh$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_local_links_in_the_readme_lead_somewhere() -> None:
    """Every relative link and image of the README names a file of the repository
    (the site's own links are checked by `mkdocs build --strict` in tests/run.sh)."""
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if not re.match(r"\w+://", target):
            assert (ROOT / target).exists(), target


def test_the_screenshot_is_small() -> None:
    """The README's screenshot of the status page is there, a PNG, under 150 KB."""
    shot = ROOT / "docs" / "status-page.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 150_000
    assert "(docs/status-page.png)" in README.read_text()


def test_the_docs_say_what_the_test_run_installs_outside_the_venv() -> None:
    """tests/run.sh's system installs (chromium, s3rver) and the way to skip them are
    written in the script's header and in the docs."""
    header = (ROOT / "tests" / "run.sh").read_text().split("set -euo")[0]
    page = (ROOT / "docs" / "index.md").read_text()
    for text in (header, page):
        for needed in ("chromium", "s3rver", "ASGI_LITESTREAM_TEST_NO_SYSTEM=1"):
            assert needed in text, needed
