"""Client for Litestream's control socket: HTTP/1.1 over a unix socket (0.5.7+)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    """Positions after ``POST /sync``: local ``txid`` and what the replica holds."""

    status: str
    txid: int
    replicated_txid: int


# httpx logs every request at INFO; polling the control socket every few seconds
# would flood the app's logs, so drop just those records.
_BASE_URL = "http://litestream.control"


# Other URLs we poll in the background (Litestream's /metrics), kept out likewise.
QUIET_URLS: set[str] = set()


class _QuietControlRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(isinstance(arg, httpx.URL) and (
            arg.host == "litestream.control" or str(arg) in QUIET_URLS)
            for arg in (record.args or ()))


logging.getLogger("httpx").addFilter(_QuietControlRequests())


class ControlError(Exception):
    """The control socket answered with an error, or not at all."""


class ControlClient:
    """One httpx client bound to one control socket path."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._client = httpx.AsyncClient(
            # Plain HTTP over a unix socket: no TLS context to build (that alone cost
            # ~15 ms of startup), and no proxy from the environment may capture it.
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path), verify=False),
            base_url=_BASE_URL,
            timeout=httpx.Timeout(5.0),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
        data = await self._request("POST", "/sync", json=body, timeout=timeout + 2)
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
        self, method: str, url: str, *, json: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._client.request(
                method, url, json=json,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            raise ControlError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {"error": response.text.strip()}
        if response.status_code != 200 or not isinstance(data, dict) or "error" in data:
            error = data.get("error") if isinstance(data, dict) else data
            raise ControlError(f"{method} {url}: HTTP {response.status_code}: {error}")
        return data
