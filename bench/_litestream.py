"""Litestream by hand (the alternative), SQLite writes, and restores."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import Context, child_env, run_quiet, stop_process


class BareLitestream:
    """``litestream replicate`` as a user would run it: a hand-written config with one
    replica and the control socket enabled, its output to a file. Blocking methods."""

    def __init__(self, ctx: Context, database: Path, replica_url: str,
                 env: dict[str, str] | None = None) -> None:
        self.ctx = ctx
        self.database = database
        self.env = env or child_env()
        workdir = ctx.tempdir("bare")
        self.socket = workdir / "ctl.sock"
        self.config = workdir / "litestream.yml"
        self.log = workdir / "litestream.log"
        self.config.write_text(
            "logging: {level: info, type: json}\n"
            f"socket: {{enabled: true, path: {self.socket}}}\n"
            "dbs:\n"
            f"  - path: {database}\n"
            f"    replica: {{url: '{replica_url}', sync-interval: 1s}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Exec → the control socket answers ``GET /info``. Returns seconds."""
        start = time.perf_counter()
        self.process = self.ctx.popen([self.ctx.binary, "replicate", "-config", self.config],
                                      log=self.log, env=self.env)
        self.ctx.track([self.process.pid])
        while True:
            with contextlib.suppress(OSError):
                if control_get(self.socket, "/info").startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - start
            if self.process.poll() is not None:
                raise RuntimeError(f"litestream exited: {self.log.read_text()[-500:]}")
            time.sleep(0.001)

    def sync_wait(self) -> None:
        """``litestream sync -wait``: returns once the replica holds every commit."""
        result = run_quiet([self.ctx.binary, "sync", "-wait", "-socket", self.socket,
                            self.database])
        if result.returncode != 0:
            raise RuntimeError(f"litestream sync -wait failed: {result.stderr.strip()}")

    def stop(self) -> None:
        """SIGTERM (Litestream's own final sync), and wait for the exit."""
        if self.process is not None:
            stop_process(self.process)


def control_get(sock: Path, path: str) -> bytes:
    """GET over Litestream's control socket with a raw unix socket (no client to warm)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(2)
        conn.connect(str(sock))
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def create_db(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")


def insert_rows(path: Path, bodies: Sequence[str]) -> None:
    """One committed transaction per row, as a web app's requests would do."""
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        for body in bodies:
            with conn:
                conn.execute("INSERT INTO notes (body) VALUES (?)", (body,))


def restored_bodies(ctx: Context, replica_url: str,
                    env: dict[str, str] | None = None) -> set[str]:
    """``litestream restore`` the replica into a fresh file; the notes it holds."""
    out = ctx.tempdir("restore") / "restored.db"
    result = run_quiet([ctx.binary, "restore", "-o", out, replica_url], env=env or child_env())
    if result.returncode != 0 or not out.exists():
        return set()  # no backup at all
    with contextlib.closing(sqlite3.connect(out)) as conn:
        return {row[0] for row in conn.execute("SELECT body FROM notes")}
