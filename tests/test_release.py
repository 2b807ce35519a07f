"""What a release holds: one version everywhere, a wheel with the package, its py.typed
and nothing else (no tests, no bench), and the metadata a package index shows."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import asgi_litestream
from asgi_litestream._cli.main import main
from tests.release import ROOT, built_dist, only


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return only(built_dist(tmp_path_factory), "*.whl")


def test_one_version_for_the_package_the_cli_and_the_changelog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`__version__`, `asgi-litestream --version` and the newest CHANGELOG release agree,
    and pyproject.toml reads the version rather than repeating it."""
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"asgi-litestream {asgi_litestream.__version__}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    newest = re.search(r"^## \[(\d[^\]]*)\]", changelog, re.M)
    assert newest is not None and newest.group(1) == asgi_litestream.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r'^version = "', pyproject, re.M)  # only the attr reference


def test_importing_the_package_reads_no_installed_metadata() -> None:
    """The version is a constant: `import asgi_litestream` loads no importlib.metadata."""
    code = "import sys, asgi_litestream; print('importlib.metadata' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_the_wheel_holds_the_package_its_py_typed_and_nothing_else(wheel: Path) -> None:
    """Every file is under asgi_litestream/ or its .dist-info; py.typed and the licence
    are in; no tests, bench, examples or docs."""
    names = zipfile.ZipFile(wheel).namelist()
    version = asgi_litestream.__version__
    info = f"asgi_litestream-{version}.dist-info/"
    assert "asgi_litestream/py.typed" in names
    assert f"{info}licenses/LICENSE" in names
    assert all(n.startswith(("asgi_litestream/", info)) for n in names), names
    assert not [n for n in names if re.search(r"(^|/)(tests?|bench|examples|docs)/", n)]
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "asgi_litestream").rglob("*.py")}
    assert sources <= set(names)  # every module of every folder is packaged


def test_the_wheel_metadata_says_what_an_index_shows(wheel: Path) -> None:
    """Version, licence, Python versions, classifiers, project URLs and the README."""
    with zipfile.ZipFile(wheel) as archive:
        meta = Parser().parsestr(archive.read(
            f"asgi_litestream-{asgi_litestream.__version__}.dist-info/METADATA").decode())
    assert meta["Version"] == asgi_litestream.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier") or []
    for needed in ("Development Status :: 3 - Alpha", "Framework :: AsyncIO",
                   "Typing :: Typed", *(f"Programming Language :: Python :: 3.{minor}"
                                        for minor in (10, 11, 12, 13))):
        assert needed in classifiers, needed
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "bash tests/run.sh" in meta.get_payload()
