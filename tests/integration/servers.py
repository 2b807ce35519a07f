"""Run the notes app under a real ASGI server in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
# Every server gets this bearer token; Server.get sends it, so the tests read the
# status details and the metrics (anonymous requests get only the probe's answer).
STATUS_TOKEN = "servers-status-token"


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
        return httpx.get(self.base + path, timeout=10, headers={
            "connection": "close", "authorization": f"Bearer {STATUS_TOKEN}"})

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


NOTES_APP = "tests.integration.notes_server:app"


def server_command(kind: str, app: str, port: int, workers: int) -> list[str]:
    """The command a user would type, with a 20 s graceful-shutdown allowance."""
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", app, "--port", str(port),
                "--workers", str(workers), "--timeout-graceful-shutdown", "20"]
    if kind == "hypercorn":
        return [sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--graceful-timeout", "20"]
    if kind == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), app]
    if kind == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker",
                "-w", str(workers), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20",
                # gunicorn 27's control socket defaults to ~/.gunicorn/gunicorn.ctl: one
                # per user, so concurrent servers would take it from each other.
                "--no-control-socket", app]
    raise ValueError(kind)


def start_server(kind: str, tmp_path: Path, env: dict[str, str], *, workers: int = 1,
                 wait: bool = True, app: str = NOTES_APP, args: tuple[str, ...] = (),
                 session: bool = False) -> Server:
    """Run ``app`` under the ``kind`` server on a free loopback port; ``args`` are
    appended to its command line. With ``session`` the server leads its own process
    group, as in a terminal (where Ctrl+C signals the whole group)."""
    port = free_port()
    command = [*server_command(kind, app, port, workers), *args]
    log = tmp_path / f"{kind}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT),
                "ASGI_LITESTREAM_STATUS_TOKEN": STATUS_TOKEN, **env}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=session)
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


def statuses_of_all_workers(server: Server, workers: int,
                            timeout: float = 30) -> dict[int, dict[str, Any]]:
    """Status from every worker (requests land on random workers; keep asking)."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        response = server.get("/_litestream/status")
        if response.status_code == 200:
            body = response.json()
            seen[body["worker_pid"]] = body
    assert len(seen) == workers, f"saw workers {sorted(seen)}:\n{server.output()}"
    return seen
