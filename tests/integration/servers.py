"""Run the notes app under a real ASGI server in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        # A fresh connection per call, so that requests spread over the workers.
        return httpx.get(self.base + path, timeout=10, headers={"connection": "close"})

    def post_note(self, body: str) -> dict[str, Any]:
        response = httpx.post(self.base + "/notes", json={"body": body}, timeout=10,
                              headers={"connection": "close"})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(kind: str, tmp_path: Path, env: dict[str, str], *, workers: int = 1,
                 wait: bool = True) -> Server:
    port = free_port()
    app = "tests.integration.notes_server:app"
    if kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--port", str(port),
                   "--workers", str(workers), "--timeout-graceful-shutdown", "20"]
    elif kind == "hypercorn":
        command = [sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}",
                   "--workers", str(workers), "--graceful-timeout", "20"]
    else:
        raise ValueError(kind)
    log = tmp_path / f"{kind}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out,
                                   stderr=subprocess.STDOUT)
    server = Server(process, port, log)
    if wait:
        wait_until_running(server)
    return server


def wait_until_running(server: Server, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.output()}")
        try:
            response = server.get("/_litestream/status")
            if response.status_code == 200:
                return dict(response.json())
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"server not running within {timeout}s:\n{server.output()}")
