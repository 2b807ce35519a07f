"""What importing the package loads: a feature's code only when it is used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    """The modules that ``code`` adds to a fresh interpreter that has Starlette."""
    script = ("import json, sys, starlette.applications\n"
              "before = set(sys.modules)\n"
              f"{code}\n"
              "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out))


# Third-party and standard modules no app should pay for to add the middleware: httpx
# imports its command line (click, and rich and pygments when installed).
HEAVY = ("httpx", "click", "rich", "pygments", "yaml", "boto3", "botocore",
         "importlib.metadata", "tarfile", "sqlite3", "sqlalchemy")


def test_import_loads_next_to_nothing() -> None:
    """`import asgi_litestream` loads the errors and the version only."""
    ours = {m for m in loaded_after("import asgi_litestream")
            if m.startswith("asgi_litestream")}
    assert ours == {"asgi_litestream", "asgi_litestream._exceptions",
                    "asgi_litestream._release"}


@pytest.mark.parametrize("feature", [
    "asgi_litestream._follower", "asgi_litestream._cli", "asgi_litestream._restore.points",
    "asgi_litestream._restore.verify", "asgi_litestream._locks.lease",
    "asgi_litestream._locks.lease_keeper", "asgi_litestream._web.dashboard",
    "asgi_litestream._web.metrics", *HEAVY])
def test_the_middleware_loads_no_feature_it_does_not_use(feature: str) -> None:
    """Adding LitestreamLifespan loads no follower, CLI, restore points, verify, lease,
    page or metrics renderer, and none of the heavy libraries."""
    found = loaded_after("from asgi_litestream import LitestreamLifespan")
    assert "asgi_litestream._middleware" in found
    assert not {m for m in found if m == feature or m.startswith(feature + ".")}


def test_a_feature_loads_when_first_used() -> None:
    """The read replica's name resolves (and imports its code) when asked for."""
    found = loaded_after("import asgi_litestream; asgi_litestream.ReadReplica")
    assert "asgi_litestream._follower.replica" in found
