"""s3rver (Node.js), a second S3 implementation beside moto: where tests/run.sh installs
it, and how to run it on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PREFIX = ROOT / ".s3rver"  # npm install --prefix tests/.s3rver s3rver@VERSION
ENTRY = PREFIX / "node_modules" / "s3rver" / "bin" / "s3rver.js"
# s3rver checks signatures against its one built-in account.
ACCESS_KEY_ID = SECRET_ACCESS_KEY = "S3RVER"


def why_unavailable() -> str | None:
    """Why s3rver cannot run here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed: the s3rver S3 backend needs `node` (and npm)"
    if not ENTRY.exists():
        return (f"s3rver is not installed in {PREFIX}: run `bash tests/run.sh`, "
                "which installs it with npm")
    return None


def start(directory: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    node = shutil.which("node")
    assert node is not None
    with log.open("wb") as out:
        return subprocess.Popen([node, str(ENTRY), "--directory", str(directory),
                                 "--address", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
