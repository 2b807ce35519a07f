"""A private place for Litestream's config file and control socket."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ._config import Settings

# Unix socket paths are capped at 108 bytes; keep ours well inside that.
_MAX_SOCKET_PATH = 100
CONFIG_NAME = "litestream.yml"
SOCKET_NAME = "ctl.sock"


def private_workdir() -> Path:
    """A fresh 0700 directory (mkdtemp) whose socket path fits the unix limit."""
    workdir = Path(tempfile.mkdtemp(prefix="als-"))
    if len(str(workdir / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        shutil.rmtree(workdir)
        workdir = Path(tempfile.mkdtemp(prefix="als-", dir="/tmp"))
    return workdir


def write_config(settings: Settings, workdir: Path) -> Path:
    """Write Litestream's config (no secret in it) as a 0600 file nobody else opened."""
    path = workdir / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(settings.to_yaml(socket_path=workdir / SOCKET_NAME))
    return path
