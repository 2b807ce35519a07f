"""The library's own HTTP routes: the status route (probes), the metrics route
(Prometheus) and the status page (people). All answer from memory; the first two
re-render only when something changed, so scrapers cost about a static route.

Who sees what. These routes are answered before the app's own middleware runs, so the
app's authentication never sees them: they carry their own (:class:`Access`). Anyone
gets the status route's code (200/503) with what a probe needs (``status``, ``state``,
``healthy``, ``restarts``: no replica, path, pid, position, error line, version or
lease holder). The full status JSON (the *details*), the metrics and the page need an
authorization: a bearer token, HTTP Basic credentials, or the app's callable.
``public_details=True`` opens the details and the metrics to anyone, never the page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .._config.settings import Settings
from .status_body import PUBLIC_FIELDS, StatusBody, dumps
from .view import ServiceView

if TYPE_CHECKING:
    from .._follower.replica import ReadReplica
    from .metrics import MetricsBody

logger = logging.getLogger("asgi_litestream")

_POINTS_EVERY = 60.0  # seconds between two listings of the restore points
_POINTS_TIMEOUT = 5.0  # a page never waits longer for them; the listing is killed then
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_PROMETHEUS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
               (b"cache-control", b"no-store")]
_HTML = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]
_BASIC = (b"www-authenticate", b'Basic realm="litestream", charset="UTF-8"')
_BEARER = (b"www-authenticate", b'Bearer realm="litestream"')
_NOT_STARTED = json.dumps({"status": "down", "state": "not started", "healthy": False,
                           "restarts": 0}, separators=(",", ":")).encode()
Refusal = tuple[int, bytes, list[tuple[bytes, bytes]]]


class Access:
    """Who may see the details, the metrics and the page: one check for all three.

    A request is allowed by the bearer token (``status_token``) or the HTTP Basic
    credentials (``dashboard_user`` / ``dashboard_password``), each compared in constant
    time (digests of equal length), or else by the app's callable (``dashboard_auth``,
    plain or async) returning exactly ``True``. ``public`` (``public_details``) lets
    anyone see the details and the metrics; the routes decide where it applies.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.public = settings.public_details
        self._token = _digest(settings.status_token.encode()) if settings.status_token else None
        user, password = settings.dashboard_user, settings.dashboard_password
        self._basic = _digest(f"{user}:{password}".encode()) if user and password else None
        self._check: Callable[[Request], Any] | None = settings.dashboard_auth
        self._check_failed = self._hinted = False
        challenges = [*([_BASIC] if self._basic else []), *([_BEARER] if self._token else [])]
        if challenges or self._check is None:
            # With nothing configured, the bearer token is what would let one in.
            self.refusal: Refusal = (401, b"authorization required\n",
                                     [*_TEXT, *(challenges or [_BEARER])])
        else:  # only the app's callable decides, and it said no
            self.refusal = (403, b"forbidden\n", _TEXT)

    async def allows(self, scope: Scope, receive: Receive) -> bool:
        """Whether this request carries an authorization (``public`` not counted)."""
        scheme, credentials = _authorization(scope)
        if scheme == b"bearer" and self._token is not None and _same(credentials, self._token):
            return True
        if scheme == b"basic" and self._basic is not None:
            try:
                given = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                given = None
            if given is not None and _same(given, self._basic):
                return True
        if self._check is None:
            return False
        try:
            allowed = self._check(Request(scope, receive))
            if inspect.isawaitable(allowed):  # async def, or a callable object's
                allowed = await allowed
        except Exception:
            # Refused, never a 500: a probe of the status route must still get its code.
            if not self._check_failed:
                self._check_failed = True
                logger.warning("litestream %r: dashboard_auth raised; the request is refused "
                               "(logged once)", self.settings.name, exc_info=True)
            return False
        return allowed is True

    def hint(self, route: str) -> None:
        """Once: why an anonymous request was refused when nothing could allow one."""
        if self._hinted or self._token or self._basic or self._check is not None:
            return
        self._hinted = True
        logger.warning(
            "litestream %r: refused an anonymous request for %s: the metrics and the status "
            "details need an authorization. Fix: set ASGI_LITESTREAM_STATUS_TOKEN and scrape "
            "with it (Prometheus: authorization: {credentials: ...}), or public_details=True "
            "for routes on a private port", self.settings.name, route)


class Routes:
    """Path → handler for the routes that are on; what they answer for is given once
    started (:meth:`serve_primary`, :meth:`serve_follower`)."""

    def __init__(self, *, status_path: str | None, metrics_path: str | None,
                 dashboard_path: str | None) -> None:
        self.service: ServiceView | None = None
        self.follower: ReadReplica | None = None  # instead, on a read replica
        self.paths: dict[str, Handler] = {}
        for path, handler in ((status_path, self._status), (metrics_path, self._metrics),
                              (dashboard_path, self._dashboard)):
            if path is not None:
                self.paths[path] = handler
        self._access: Access | None = None
        self._status_key: tuple[object, ...] = ()
        self._status_cache: tuple[bytes, bytes, bool, bool] = (b"", b"", False, False)
        self._status_json = StatusBody()  # keeps each database's JSON between polls
        self._metrics_key: tuple[object, ...] = ()
        self._metrics_cache = b""
        # Keeps the per-database families between polls; made at the first scrape.
        self._metrics_body: MetricsBody | None = None
        self._points_cache: tuple[float, dict[str, list[dict[str, Any]] | None] | None] = (
            -_POINTS_EVERY, None)
        self._listing = False  # a listing of the restore points runs: never a second

    def serve_primary(self, service: ServiceView) -> None:
        """Answer for ``service`` (it has started) until :meth:`clear`."""
        self.service, self.follower = service, None

    def serve_follower(self, replica: ReadReplica) -> None:
        """Answer for the read replica's copies until :meth:`clear`."""
        self.service, self.follower = None, replica

    def clear(self) -> None:
        """Stopped: the routes answer 503 "not started" again."""
        self.service, self.follower = None, None

    def _access_for(self, settings: Settings) -> Access:
        if self._access is None or self._access.settings is not settings:
            self._access = Access(settings)
        return self._access

    # -- status -----------------------------------------------------------------

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        head = scope["method"] == "HEAD"
        found = self.follower or self.service
        if found is None:
            await _respond(send, 503, _NOT_STARTED, _JSON, head=head)
            return
        access = self._access_for(found.settings)
        # Same URL for both: the details with an authorization, else the probe's answer.
        # Credentials that do not pass are refused outright, not quietly downgraded.
        details = access.public or await access.allows(scope, receive)
        if not details and _authorization(scope)[0] is not None:
            await _respond(send, *access.refusal, head=head)
            return
        if self.follower is not None:
            # A read replica is ready once every copy is in place and within max_lag.
            status = self.follower.status()
            body = dumps(status if details else _public(status))
            await _respond(send, 200 if status["healthy"] else 503, body, _JSON, head=head)
            return
        full, public, running, healthy = self._status_body()
        service = self.service
        # Readiness follows "running"; alerting may also demand "healthy"
        # (strict_status=True, or ?strict=1 on one probe only).
        strict = service is not None and (
            service.settings.strict_status or _query_flag(scope, b"strict"))
        ok = running and (healthy or not strict)
        await _respond(send, 200 if ok else 503, full if details else public, _JSON, head=head)

    def _status_body(self) -> tuple[bytes, bytes, bool, bool]:
        """The details, the probe's answer, running, healthy."""
        service = self.service
        if service is None:
            return _NOT_STARTED, _NOT_STARTED, False, False
        key = service.status_key()
        if key != self._status_key:
            status = service.status()
            body, public = self._status_json.render(status)
            self._status_cache = (body, public, status.running, status.healthy is True)
            self._status_key = key
        return self._status_cache

    # -- metrics ----------------------------------------------------------------

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        head = scope["method"] == "HEAD"
        found = self.follower or self.service
        if found is None:
            await _respond(send, 503, b"# not started\n", _PROMETHEUS, head=head)
            return
        access = self._access_for(found.settings)
        if not (access.public or await access.allows(scope, receive)):
            access.hint("the metrics")
            await _respond(send, *access.refusal, head=head)
            return
        if self.follower is not None:
            await _respond(send, 200, self.follower.metrics().encode(), _PROMETHEUS,
                           head=head)
            return
        service = self.service
        if service is None:  # found was one of the two
            return
        facts = service.facts()
        key = (service.status_key(), facts.sync_stats.callers, facts.litestream_metrics,
               facts.last_flush_seconds)
        if key != self._metrics_key:
            if self._metrics_body is None:
                from .metrics import MetricsBody  # its code only once someone scrapes

                self._metrics_body = MetricsBody()
            self._metrics_cache = self._metrics_body.render(
                service.status(), sync=facts.sync_stats, sync_rounds=facts.sync_rounds,
                flush_seconds=facts.last_flush_seconds, litestream=facts.litestream_metrics)
            self._metrics_key = key
        await _respond(send, 200, self._metrics_cache, _PROMETHEUS, head=head)

    # -- the status page ------------------------------------------------------------

    async def _dashboard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await _readable(scope, send):
            return
        head = scope["method"] == "HEAD"
        service = self.service
        if service is None:
            await _respond(send, 503, b"not started", _HTML, head=head)
            return
        access = self._access_for(service.settings)
        if not await access.allows(scope, receive):  # public_details never opens the page
            await _respond(send, *access.refusal, head=head)
            return
        from .dashboard import render_dashboard  # only when someone looks

        page = render_dashboard(service.status(), service.history(),
                                restore_points=await self._restore_points(service))
        await _respond(send, 200, page.encode(), _HTML, head=head)

    async def _restore_points(self, service: ServiceView
                              ) -> dict[str, list[dict[str, Any]] | None] | None:
        """What the replicas hold, per database (None: not known), listed at most once
        a minute and one listing at a time (it runs `litestream ltx`). The listing runs
        in the page's request: past _POINTS_TIMEOUT, or when the request is cancelled,
        its processes are killed."""
        cached_at, points = self._points_cache
        if self._listing or time.monotonic() - cached_at < _POINTS_EVERY:
            return points  # page loads meanwhile show the last list
        from .._restore.points import list_restore_points_within  # only for the page

        self._listing = True
        try:
            settings = service.settings
            found = await list_restore_points_within(
                service.binary, service.config_path, settings.databases,
                service.litestream_env(), timeout=_POINTS_TIMEOUT,
                secrets=service.secrets())
            points = {str(path): None if listed is None else [
                {"end": point.created.isoformat().replace("+00:00", "Z"),
                 "min_txid": point.min_txid, "max_txid": point.txid, "size": point.size}
                for point in listed] for path, listed in found.items()}
            self._points_cache = (time.monotonic(), points)
        finally:
            self._listing = False
        return points


def _public(status: dict[str, Any]) -> dict[str, Any]:
    """The probe's answer: what anyone may read of the status snapshot."""
    return {field: status.get(field) for field in PUBLIC_FIELDS}


def _authorization(scope: Scope) -> tuple[bytes | None, bytes]:
    """The Authorization header's scheme (lower case) and credentials; (None, b"")
    when there is none."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            return scheme.lower(), credentials.strip()
    return None, b""


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _same(given: bytes, expected_digest: bytes) -> bool:
    """Constant time whatever the lengths: digests of equal length are compared."""
    return hmac.compare_digest(_digest(given), expected_digest)


async def _readable(scope: Scope, send: Send) -> bool:
    if scope["method"] in ("GET", "HEAD"):
        return True
    await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
    return False


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
