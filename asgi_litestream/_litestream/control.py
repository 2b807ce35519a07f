"""Client for Litestream's control socket: HTTP/1.1 over a unix socket (0.5.7+)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .loopback_http import LoopbackHTTPError, request


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    """Positions after ``POST /sync``: local ``txid`` and what the replica holds."""

    status: str
    txid: int
    replicated_txid: int


_TIMEOUT = 5.0


class ControlError(Exception):
    """The control socket answered with an error, or not at all."""


class ControlClient:
    """Requests to one control socket path (one connection each: a unix socket
    connects in microseconds, and nothing is left open to close)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def aclose(self) -> None:
        """Nothing to release; kept so that callers close what they open."""

    async def info(self) -> dict[str, Any]:
        """``{"version", "pid", "uptime_seconds", "started_at", "database_count"}``."""
        return await self._request("GET", "/info")

    async def databases(self) -> list[dict[str, Any]]:
        """``[{"path", "status", "last_sync_at"?}, ...]``."""
        found = (await self._request("GET", "/list")).get("databases") or []
        return list(found)

    async def sync(self, path: Path, *, wait: bool, timeout: float) -> SyncResult:
        """Sync ``path`` to its replica; with ``wait`` only return once it is there."""
        body: dict[str, Any] = {"path": str(path)}
        if wait:
            body.update(wait=True, timeout=max(1, round(timeout)))
        data = await self._request("POST", "/sync", payload=body, timeout=timeout + 2)
        return SyncResult(
            status=str(data.get("status", "")),
            txid=int(data.get("txid", 0)),
            replicated_txid=int(data.get("replicated_txid", 0)),
        )

    async def sync_durably(self, path: Path, *, timeout: float) -> SyncResult:
        """Return once the replica holds every transaction committed before the call.

        One ``POST /sync`` with wait first makes Litestream read the WAL, so the
        ``txid`` it reports covers every earlier commit. Litestream reads that
        ``txid`` again *after* the replica sync, so a commit landing meanwhile can show
        the replica one transaction short. Then sync again until the replica reaches
        the first answer's ``txid``: later commits never hold the caller up.
        """
        first = result = await self.sync(path, wait=True, timeout=timeout)
        while result.replicated_txid < first.txid:
            result = await self.sync(path, wait=True, timeout=timeout)
        return SyncResult(status=result.status, txid=first.txid,
                          replicated_txid=result.replicated_txid)

    async def _request(
        self, method: str, url: str, *, payload: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        try:
            reply = await request(method, url, unix=str(self.socket_path), json_body=body,
                                  timeout=_TIMEOUT if timeout is None else timeout)
        except LoopbackHTTPError as exc:
            raise ControlError(f"{method} {url}: {exc}") from exc
        try:
            data = json.loads(reply.body)
        except ValueError:
            data = {"error": reply.body.decode(errors="replace").strip()}
        if reply.status != 200 or not isinstance(data, dict) or "error" in data:
            error = data.get("error") if isinstance(data, dict) else data
            raise ControlError(f"{method} {url}: HTTP {reply.status}: {error}")
        return data
