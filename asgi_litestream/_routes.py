"""The library's own HTTP routes: the status route (probes), the metrics route
(Prometheus) and the status page (people). All answer from memory; the first two
re-render only when something changed, so scrapers cost about a static route."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ._backups import list_restore_points
from ._config import Settings
from ._exceptions import LitestreamError
from ._metrics import SyncStats, service_metrics
from ._read_replica import ReadReplica
from ._service import ReplicationService
from ._status import snapshot, snapshot_key

_POINTS_EVERY = 60.0  # seconds between two listings of the restore points
_POINTS_TIMEOUT = 10.0  # a page never waits longer for them
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_PROMETHEUS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
               (b"cache-control", b"no-store")]
_HTML = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
_NOT_STARTED = json.dumps({"name": None, "status": "down", "state": "not started",
                           "healthy": False, "restarts": 0, "pid": None, "databases": []},
                          separators=(",", ":")).encode()


class Routes:
    """Path → handler for the routes that are on; ``service`` is set once started."""

    def __init__(self, *, status_path: str | None, metrics_path: str | None,
                 dashboard_path: str | None) -> None:
        self.service: ReplicationService | None = None
        self.follower: ReadReplica | None = None  # instead, on a read replica
        self.paths: dict[str, Handler] = {}
        for path, handler in ((status_path, self._status), (metrics_path, self._metrics),
                              (dashboard_path, self._dashboard)):
            if path is not None:
                self.paths[path] = handler
        self._status_key: tuple[object, ...] = ()
        self._status_cache: tuple[bytes, bool, bool] = (b"", False, False)
        self._databases_cache: tuple[object, bytes] = (None, b"[]")
        self._metrics_key: tuple[object, ...] = ()
        self._metrics_cache = b""
        self._points_cache: tuple[float, dict[str, list[dict[str, Any]]] | None] = (
            -_POINTS_EVERY, None)

    # -- status -----------------------------------------------------------------

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        if self.follower is not None:
            # A read replica is ready once every copy is in place and within max_lag.
            found = self.follower.status()
            await _respond(send, 200 if found["healthy"] else 503,
                           json.dumps(found, separators=(",", ":")).encode(), _JSON,
                           head=scope["method"] == "HEAD")
            return
        body, running, healthy = self._status_body()
        service = self.service
        # Readiness follows "running"; alerting may also demand "healthy"
        # (strict_status=True, or ?strict=1 on one probe only).
        strict = service is not None and (
            service.settings.strict_status or _query_flag(scope, b"strict"))
        ok = running and (healthy or not strict)
        await _respond(send, 200 if ok else 503, body, _JSON, head=scope["method"] == "HEAD")

    def _status_body(self) -> tuple[bytes, bool, bool]:
        service = self.service
        if service is None:
            return _NOT_STARTED, False, False
        key = snapshot_key(service)
        if key != self._status_key:
            status = snapshot(service)
            databases = status.pop("databases")
            # The databases' part is the same list until the next poll: encoded once
            # (a thousand databases take milliseconds), spliced into the rest.
            if databases is not self._databases_cache[0]:
                self._databases_cache = (databases, _dumps(databases))
            body = _dumps(status)[:-1] + b',"databases":' + self._databases_cache[1] + b"}"
            self._status_cache = (body, status["status"] == "running",
                                  status["healthy"] is True)
            self._status_key = key
        return self._status_cache

    # -- metrics ----------------------------------------------------------------

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        if self.follower is not None:
            await _respond(send, 200, self.follower.metrics().encode(), _PROMETHEUS,
                           head=scope["method"] == "HEAD")
            return
        service = self.service
        if service is None:
            await _respond(send, 503, b"# not started\n", _PROMETHEUS)
            return
        syncs = service.syncs
        stats = syncs.stats if syncs is not None else SyncStats()
        key = (snapshot_key(service), stats.callers, service.scrape.text,
               service.keeper.last_flush_seconds)
        if key != self._metrics_key:
            self._metrics_cache = service_metrics(service).encode()
            self._metrics_key = key
        await _respond(send, 200, self._metrics_cache, _PROMETHEUS,
                       head=scope["method"] == "HEAD")

    # -- the status page ------------------------------------------------------------

    async def _dashboard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        service = self.service
        if service is None:
            await _respond(send, 503, b"not started", _HTML)
            return
        refusal = _refusal(service.settings, scope, receive)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        from ._dashboard import render_dashboard  # only when someone looks

        page = render_dashboard(snapshot(service), service.health.history(),
                                restore_points=await self._restore_points(service))
        await _respond(send, 200, page.encode(), _HTML, head=scope["method"] == "HEAD")


    async def _restore_points(self, service: ReplicationService
                              ) -> dict[str, list[dict[str, Any]]] | None:
        """What the replicas hold, listed at most once a minute (it runs `litestream
        ltx`); None when it cannot be listed."""
        cached_at, points = self._points_cache
        if time.monotonic() - cached_at < _POINTS_EVERY:
            return points
        # Claimed before listing: page loads meanwhile show the last list.
        self._points_cache = (time.monotonic(), points)
        found = None
        with anyio.move_on_after(_POINTS_TIMEOUT):
            try:
                found = await anyio.to_thread.run_sync(
                    list_restore_points, service.settings, service.binary,
                    abandon_on_cancel=True)
            except LitestreamError:
                pass
        if found is None:
            points = None
        else:
            points = {}
            for point in found:
                points.setdefault(str(point.database), []).append({
                    "end": point.created.isoformat().replace("+00:00", "Z"),
                    "min_txid": point.min_txid, "max_txid": point.txid, "size": point.size})
        self._points_cache = (time.monotonic(), points)
        return points


def _refusal(settings: Settings, scope: Scope, receive: Receive
             ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """None when the request may see the page; else the 401/403 answer."""
    if settings.dashboard_auth is not None:
        if settings.dashboard_auth(Request(scope, receive)):
            return None
        return 403, b"forbidden", _HTML
    given = _basic_credentials(scope)
    expected = f"{settings.dashboard_user}:{settings.dashboard_password}".encode()
    if given is not None and hmac.compare_digest(given, expected):
        return None
    return 401, b"authorization required", [
        *_HTML, (b"www-authenticate", b'Basic realm="litestream", charset="UTF-8"')]


def _basic_credentials(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization" and value[:6].lower() == b"basic ":
            try:
                return base64.b64decode(value[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


async def _readable(scope: Scope, send: Send) -> bool:
    if scope["method"] in ("GET", "HEAD"):
        return True
    await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
    return False


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _query_flag(scope: Scope, name: bytes) -> bool:
    for pair in scope.get("query_string", b"").split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value.lower() not in (b"0", b"false", b"no")
    return False


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]], *, head: bool = False) -> None:
    # HEAD mirrors GET's headers (content-length included), without the body.
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})
