"""LitestreamLifespan: a pure ASGI middleware that runs Litestream for the app's life.

The lifespan onion, as the server sees it::

    server: lifespan.startup ─► we start Litestream (ready) ─► inner app starts
    server ◄─ startup.complete ◄────────────────────────────── inner app
    server: lifespan.shutdown ─────────────────────────────► inner app stops writing
    inner app ─► shutdown.complete (held) ─► we flush + stop Litestream ─► server

With a lease (``lease=True``) or as a follower, getting the databases in place may
take as long as another host holds the lease, or a big first copy takes. The server's
startup does not wait for that: gunicorn kills a worker silent for 30 s, hypercorn
fails a startup after 60 s, and a server inside its startup answers no probe and
often no SIGTERM. So the server is told "started" at once, our routes answer (503,
with the state), every other request gets 503 with ``Retry-After`` (the *gate*), and
the inner app's own startup runs only once the databases are in place::

    server: lifespan.startup ─► startup.complete ─► (gate: 503) ─► lease, restore ─►
        inner app starts ─► (gate open) ...
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _registry
from ._config.options import DEFAULT, OPTION_NAMES
from ._config.settings import Settings, resolve_route
from ._config.sqlite import check_database_file, dispose_pools, engines_in, install_pragmas
from ._exceptions import StartupError
from ._follower.group import FollowerSet
from ._follower.replica import ReadReplica
from ._handle import Supervisor
from ._litestream.binary import find_litestream_for
from ._litestream.listing import check_listable
from ._litestream.logs import LitestreamLog, show_lifecycle
from ._litestream.restart import RestartPolicy
from ._litestream.workdir import (
    CONFIG_NAME,
    Workdir,
    loopback_address,
    private_workdir,
    write_config,
)
from ._locks.lease import check_lease_possible
from ._locks.workers import Leadership
from ._primary.service import ReplicationService
from ._stop_signals import unless_stopped
from ._web.routes import Routes

logger = logging.getLogger("asgi_litestream")

class LitestreamLifespan:
    """Run Litestream beside the app: ready before the app starts, flushed after it stops.

    Every option may be omitted and then comes from ``ASGI_LITESTREAM_<OPTION>``
    (upper case), then from its default; see the README for the full list.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        database: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
        replica_url: str | Mapping[str | os.PathLike[str], str] | None = None,
        config_path: str | os.PathLike[str] | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        name: str | None = None,
        bin_path: str | os.PathLike[str] | None = None,
        download: bool | None = None,
        download_url: str | None = None,
        litestream_version: str | None = None,
        litestream_sha256: str | None = None,
        status_path: str | None = DEFAULT,
        metrics_path: str | None = DEFAULT,
        dashboard_path: str | None = DEFAULT,
        dashboard_user: str | None = None,
        dashboard_password: str | None = None,
        dashboard_auth: Callable[[Request], bool | Awaitable[bool]] | None = None,
        sync_interval: float | None = None,
        startup_timeout: float | None = None,
        flush_timeout: float | None = None,
        stop_timeout: float | None = None,
        max_restarts: int | None = None,
        restart_window: float | None = None,
        max_backoff: float | None = None,
        log_level: str | None = None,
        health_interval: float | None = None,
        max_lag: float | None = None,
        strict_status: bool | None = None,
        restore_if_missing: bool | None = None,
        restore_timeout: float | None = None,
        sqlite_pragmas: bool | None = None,
        role: str | None = None,
        lease: bool | None = None,
        lease_ttl: float | None = None,
        verify_interval: float | None = None,
        if_behind: str | None = None,
        keep_behind: int | None = None,
        public_details: bool | None = None,
        status_token: str | None = None,
    ) -> None:
        # No I/O and no validation here: Starlette builds middleware lazily inside
        # the lifespan call, where an exception would read as "lifespan unsupported"
        # and the app would serve with no backup. Validation happens at startup and
        # is reported as lifespan.startup.failed.
        given = locals()
        self.app = app
        # Declared once in _config/options.py; a test checks this signature against it.
        self._options: dict[str, Any] = {name: given[name] for name in OPTION_NAMES}
        # Known before startup, so that the routes answer (503) even before it.
        self.routes = Routes(
            status_path=resolve_route("status_path", status_path, os.environ),
            metrics_path=resolve_route("metrics_path", metrics_path, os.environ),
            dashboard_path=resolve_route("dashboard_path", dashboard_path, os.environ),
        )
        self._route_for = self.routes.paths.get  # bound once: the hot path's only cost
        # While the databases are not in place yet (a lease, a follower's first copy):
        # what keeps the app's requests out (see the module's docstring). None: open.
        self._gate: Callable[[], str] | None = None

    def __repr__(self) -> str:
        return f"LitestreamLifespan(app={self.app!r}, routes={sorted(self.routes.paths)!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path first: an http request for another path costs one dict lookup.
        if scope["type"] == "http":
            route = self._route_for(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            if self._gate is not None:
                await _not_yet(self._gate(), send)
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        elif scope["type"] == "websocket" and self._gate is not None:
            await send({"type": "websocket.close", "code": 1013})  # "try again later"
            return
        await self.app(scope, receive, send)

    # -- lifespan --------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        startup = await receive()
        show_lifecycle()
        # Any failure before the app serves must reach the server as startup.failed:
        # a bare exception reads as "lifespan unsupported" under uvicorn's default
        # --lifespan auto, and the app would serve with no backup at all. Preflight
        # runs outside any task group, so its errors arrive unwrapped.
        workdir: Workdir | None = None
        handle: Supervisor | ReadReplica
        try:
            settings = Settings.from_options(**self._options)
            binary = await anyio.to_thread.run_sync(_check_files_and_find_binary, settings)
            if settings.sqlite_pragmas and settings.role == "primary":
                install_pragmas(self._options["database"])
            workdir = private_workdir()
            if settings.role == "follower":
                # The followers name each replica through the config file, never argv.
                write_config(settings, workdir)
                followers, handle, lock = _followers(
                    settings, binary, workdir, engines_in(self._options["database"]))
            else:
                metrics_addr = loopback_address() if settings.metrics_path else None
                write_config(settings, workdir, metrics_addr=metrics_addr)
                service = ReplicationService(settings, binary=binary, workdir=workdir.path,
                                             environ=os.environ, metrics_addr=metrics_addr)
                supervisor = Supervisor(service)
                handle = supervisor
            _registry.register(settings.name, handle)
        except Exception as exc:
            if workdir is not None:
                workdir.remove()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            raise
        try:
            if settings.role == "follower":
                try:
                    await self._serve_followers(followers, handle, workdir, scope, receive,
                                                send, startup)
                finally:
                    lock.resign()
            else:
                await self._serve(service, supervisor, workdir, scope, receive, send,
                                  startup)
        finally:
            _registry.unregister(settings.name, handle)
            self.routes.service = None
            self.routes.follower = None
            workdir.remove()

    async def _serve_followers(self, followers: FollowerSet, handle: Any, workdir: Workdir,
                               scope: Scope, receive: Receive, send: Send,
                               startup: Message) -> None:
        """A read replica: the copies follow in the background (readiness 503 until
        they are in place and within max_lag); the app's lifespan runs inside ours."""
        async with anyio.create_task_group() as task_group:
            await task_group.start(followers.serve)
            self.routes.follower = handle
            if "state" in scope:
                scope["state"]["litestream"] = handle
            try:
                error = await self._run_inner_lifespan(
                    followers.close, handle.name, workdir, scope, receive, send, startup,
                    in_place=lambda: followers.wait_ready(math.inf),
                    placed_now=lambda: followers.ready,
                    state=lambda: "restoring")
            finally:
                await followers.close()
        if error is not None:
            raise error

    async def _serve(self, service: ReplicationService, supervisor: Supervisor,
                     workdir: Workdir, scope: Scope, receive: Receive, send: Send,
                     startup: Message) -> None:
        """Litestream ready first, then the app's lifespan inside ours, then the close."""
        # Errors are carried out of the task group and raised after it, so that the
        # server sees the error itself rather than an ExceptionGroup around it.
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            try:
                # Lead (restore, spawn) or follow; a SIGTERM meanwhile stops it (_stop_signals).
                await unless_stopped(functools.partial(task_group.start, service.serve),
                                     name=service.settings.name)
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                error = exc
            else:
                self.routes.service = service
                if "state" in scope:
                    scope["state"]["litestream"] = supervisor
                try:
                    error = await self._run_inner_lifespan(
                        service.close, service.settings.name, workdir, scope, receive, send,
                        startup, in_place=service.wait_in_place,
                        placed_now=service.placed,
                        state=lambda: service.state.value, on_app_start=service.note_app_start)
                finally:
                    await service.close()  # a no-op once the inner lifespan closed it
        if error is not None:
            raise error

    async def _run_inner_lifespan(
        self, close: Callable[[], Awaitable[None]], name: str, workdir: Workdir,
        scope: Scope, receive: Receive, send: Send, startup: Message, *,
        in_place: Callable[[], Awaitable[object]], placed_now: Callable[[], bool],
        state: Callable[[], str],
        on_app_start: Callable[[], None] | None = None,
    ) -> Exception | None:
        """Run the inner app's lifespan inside ours, once the databases are in place;
        hold its shutdown reply until Litestream has flushed, so the server does not
        exit before the replica has every row. Returns the inner app's own error, if
        any, for the caller to raise."""
        held: list[Message] = []
        startup_replied = False  # to the server
        app_replied = False  # by the inner app, to us
        given_startup = False
        server_said: list[Message] = []
        shutdown = anyio.Event()
        inner_error: Exception | None = None

        async def listen() -> None:
            # After startup, the server has one message left for us: lifespan.shutdown.
            server_said.append(await receive())
            shutdown.set()

        async def inner_receive() -> Message:
            nonlocal given_startup
            if not given_startup:
                given_startup = True
                return startup
            await shutdown.wait()
            return server_said[0]

        async def inner_send(message: Message) -> None:
            nonlocal startup_replied, app_replied
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                app_replied = True
                self._gate = None
                if not startup_replied:
                    startup_replied = True
                    await send(message)
            elif kind == "lifespan.startup.failed" and startup_replied:
                # The server was told "started" already (the gate): it cannot hear
                # this any more. Log it, and stop the server (see _stop_the_server).
                app_replied = True
                logger.error("litestream %r: the app's startup failed: %s", name,
                             message.get("message", ""))
                held.append({"type": "lifespan.shutdown.failed",
                             "message": f"the app's startup failed: "
                                        f"{message.get('message', '')}"})
            elif kind in ("lifespan.startup.failed", "lifespan.shutdown.complete",
                          "lifespan.shutdown.failed"):
                app_replied = True
                held.append(message)  # sent once Litestream has flushed and stopped
            else:
                await send(message)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listen)
            if placed_now():
                placed = await _first_of(in_place, shutdown.wait)
            else:
                # Not in place yet (a lease, a first copy): start serving, behind the
                # gate, rather than hold the server's startup (the docstring says why).
                self._gate = state
                startup_replied = True
                await send({"type": "lifespan.startup.complete"})
                placed = await _first_of(in_place, shutdown.wait)
            if isinstance(placed, Exception):
                logger.error("litestream %r: %s; the app did not start", name, placed)
                if not startup_replied:
                    held.append({"type": "lifespan.startup.failed", "message": str(placed)})
                else:
                    inner_error = placed
                    held.append({"type": "lifespan.shutdown.failed", "message": str(placed)})
                    _stop_the_server(name)
            elif placed:
                if on_app_start is not None:
                    on_app_start()
                try:
                    await self.app(scope, inner_receive, inner_send)
                except Exception as exc:
                    if app_replied:
                        inner_error = exc
                    else:
                        # Like uvicorn: an app that raises before answering startup does
                        # not speak lifespan (Django's ASGI handler). Litestream runs
                        # regardless.
                        logger.info("litestream %r: the app does not support lifespan "
                                    "(%s); running Litestream for it anyway", name, exc)
                        self._gate = None
                if held and held[0]["type"] == "lifespan.shutdown.failed" and not shutdown.is_set():
                    # The app failed to start behind the gate: nothing serves; stop.
                    inner_error = inner_error or RuntimeError(held[0]["message"])
                    _stop_the_server(name)
                failed_to_start = bool(held) and held[0]["type"] == "lifespan.startup.failed"
                if not startup_replied and not failed_to_start:
                    startup_replied = True  # an app that does not speak lifespan
                    await send({"type": "lifespan.startup.complete"})
            if startup_replied:
                await shutdown.wait()  # the server's lifespan.shutdown
            task_group.cancel_scope.cancel()
        await close()
        # Before the reply, not after: uvicorn (one process) re-raises SIGTERM as
        # soon as it has shutdown.complete, and nothing of ours runs past that.
        workdir.remove()
        self._gate = None
        if not held:
            held = [{"type": "lifespan.shutdown.failed", "message": str(inner_error)}
                    if inner_error is not None else {"type": "lifespan.shutdown.complete"}]
        for message in held:
            await send(message)
        return inner_error


async def _first_of(in_place: Callable[[], Awaitable[object]],
                    shutdown: Callable[[], Awaitable[object]]) -> bool | Exception:
    """True: in place; an Exception: getting there failed; False: the server asked to
    shut down first."""
    result: bool | Exception = False

    async def placed() -> None:
        nonlocal result
        try:
            await in_place()
            result = True
        except Exception as exc:
            result = exc
        task_group.cancel_scope.cancel()

    async def stopping() -> None:
        nonlocal result
        await shutdown()
        result = False
        task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(placed)
        task_group.start_soon(stopping)
    return result


def _stop_the_server(name: str) -> None:
    """Ask the server to stop as an operator would, with SIGTERM, when the server
    listens for it (uvicorn, hypercorn, granian, gunicorn's workers all do; uvicorn
    then exits by that signal, a non-zero status). Under a test harness with no
    handler, the gate stays shut instead (503) and the error is in the log."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, None):
        logger.error("litestream %r: the app is not serving (503) and nothing listens for "
                     "SIGTERM here: stop the process", name)
        return
    logger.error("litestream %r: stopping the server (SIGTERM to pid %d)", name, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


async def _not_yet(state: str, send: Send) -> None:
    """The gate's answer while the databases are not in place yet."""
    body = f"starting: {state}; not serving until the databases are in place\n".encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})


def _followers(settings: Settings, binary: Path, workdir: Workdir, engines: list[Any]
               ) -> tuple[FollowerSet, ReadReplica, Leadership]:
    """The followers of a read replica, and the lock that makes them the only ones."""
    lock = Leadership(settings.databases)
    if not lock.try_lead():
        raise StartupError(
            f"another process already follows {', '.join(str(d.path) for d in settings.databases)}"
            ". Fix: a follower runs one worker per copy: scale pods, not --workers")
    followers = FollowerSet(
        binary, settings.databases, env=settings.child_env(os.environ),
        log=LitestreamLog(settings.secrets()), name=settings.name,
        config_path=workdir.path / CONFIG_NAME,
        policy=lambda: RestartPolicy(max_restarts=settings.max_restarts,
                                     restart_window=settings.restart_window,
                                     max_backoff=settings.max_backoff),
        interval=settings.sync_interval, health_interval=settings.health_interval,
        max_lag=settings.max_lag, probe_timeout=settings.startup_timeout,
        grace=settings.stop_timeout, secrets=settings.secrets(),
        on_fresh_copy=lambda path: replica.fresh_copy(path, engines),
        on_update=(lambda path: dispose_pools(engines)) if engines else None)
    replica = ReadReplica(settings, followers)
    return followers, replica, lock


def _check_files_and_find_binary(settings: Settings) -> Path:
    """The blocking part of preflight, in one thread hop: the databases are SQLite
    (or absent), and the Litestream executable is found (or fetched)."""
    for db in settings.databases:
        if not db.is_folder:
            check_database_file(db.path)
        elif settings.restore_if_missing:
            check_listable(db)
    if settings.lease:
        check_lease_possible(settings.lease_replica)
    return find_litestream_for(settings)
