"""LitestreamLifespan: a pure ASGI middleware that runs Litestream for the app's life:
ready before the app starts, flushed after it stops (the onion and the gate that keeps
the app's requests out until its databases are in place: _lifespan.py)."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _registry
from ._config.options import DEFAULT, OPTION_NAMES
from ._config.settings import Settings, resolve_route
from ._config.sqlite import check_database_file, dispose_pools, engines_in, install_pragmas
from ._exceptions import StartupError
from ._handle import Supervisor
from ._lifespan import Gate, run_inner_lifespan
from ._litestream.binary import find_litestream_for
from ._litestream.logs import show_lifecycle
from ._litestream.workdir import (
    CONFIG_NAME,
    Workdir,
    loopback_address,
    private_workdir,
    write_config,
)
from ._locks.workers import Leadership
from ._primary.service import ReplicationService
from ._stop_signals import unless_stopped
from ._web.routes import Routes

if TYPE_CHECKING:
    from ._follower.replica import ReadReplica

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
        access_key_id_file: str | os.PathLike[str] | None = None,
        secret_access_key_file: str | os.PathLike[str] | None = None,
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
        self._gate = Gate()

    def __repr__(self) -> str:
        return f"LitestreamLifespan(app={self.app!r}, routes={sorted(self.routes.paths)!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path first: an http request for another path costs one dict lookup.
        if scope["type"] == "http":
            route = self._route_for(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
            if self._gate.state is not None:
                await self._gate.refuse(scope, send)
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        elif scope["type"] == "websocket" and self._gate.state is not None:
            await self._gate.refuse(scope, send)
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
        try:
            settings = Settings.from_options(**self._options)
            binary, prepared, metrics_addr = await anyio.to_thread.run_sync(
                _prepare, settings)
            workdir = prepared
            # The one place the role matters: from here on both run the same way.
            if settings.role == "follower":
                role = _follower_role(settings, binary, prepared, self._options["database"])
            else:
                role = _primary_role(settings, binary, prepared, self._options["database"],
                                     metrics_addr)
            _registry.register(settings.name, role.handle)
        except Exception as exc:
            if workdir is not None:
                workdir.remove()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            raise
        try:
            await self._serve(role, settings.name, prepared, scope, receive, send, startup)
        finally:
            role.release()
            _registry.unregister(settings.name, role.handle)
            self.routes.clear()
            prepared.remove()

    async def _serve(self, role: _Role, name: str, workdir: Workdir, scope: Scope,
                     receive: Receive, send: Send, startup: Message) -> None:
        """Litestream (or the followers) started first, then the app's lifespan inside
        ours, then the close."""
        # Errors are carried out of the task group and raised after it, so that the
        # server sees the error itself rather than an ExceptionGroup around it.
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            try:
                # Lead (restore, spawn), follow, or start the copies; a SIGTERM
                # meanwhile stops it (_stop_signals).
                await unless_stopped(functools.partial(task_group.start, role.serve),
                                     name=name)
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                error = exc
            else:
                role.show(self.routes)
                if "state" in scope:
                    scope["state"]["litestream"] = role.handle
                try:
                    error = await run_inner_lifespan(
                        self.app, self._gate, role.close, name, workdir, scope, receive,
                        send, startup, in_place=role.in_place, placed_now=role.placed_now,
                        state=role.state, on_app_start=role.on_app_start)
                finally:
                    await role.close()  # a no-op once the inner lifespan closed it
        if error is not None:
            raise error


@dataclass(frozen=True, slots=True, kw_only=True)
class _Role:
    """What the lifespan runs, a primary or a read replica alike: built once by
    :func:`_primary_role` or :func:`_follower_role`, then served one way."""

    handle: Supervisor | ReadReplica  # request.state.litestream, the registry's entry
    serve: Callable[..., Awaitable[None]]  # an anyio service: task_group.start(serve)
    close: Callable[[], Awaitable[None]]
    in_place: Callable[[], Awaitable[object]]  # the app's own startup waits for it
    placed_now: Callable[[], bool]
    state: Callable[[], str]  # what the gate's 503 says meanwhile
    show: Callable[[Routes], None]  # hands the routes what they serve
    on_app_start: Callable[[], None] | None = None
    release: Callable[[], None] = lambda: None


def _primary_role(settings: Settings, binary: Path, workdir: Workdir, database: Any,
                  metrics_addr: str | None) -> _Role:
    """Replicate (lead, or stand by for the leading worker)."""
    if settings.sqlite_pragmas:
        install_pragmas(database)
    service = ReplicationService(settings, binary=binary, workdir=workdir.path,
                                 environ=os.environ, metrics_addr=metrics_addr)

    return _Role(handle=Supervisor(service), serve=service.serve, close=service.close,
                 in_place=service.wait_in_place, placed_now=service.placed,
                 state=lambda: service.state.value,
                 show=lambda routes: routes.serve_primary(service),
                 on_app_start=service.note_app_start)


def _follower_role(settings: Settings, binary: Path, workdir: Workdir, database: Any
                   ) -> _Role:
    """A read replica: the copies follow in the background (readiness 503 until they
    are in place and within max_lag), under a lock that makes them the only ones."""
    # Imported here: a primary never loads the followers' code (import time, memory).
    from ._follower.group import FollowerSet
    from ._follower.replica import ReadReplica

    engines = engines_in(database)
    followers = FollowerSet.from_settings(
        settings, binary, config_path=workdir.path / CONFIG_NAME,
        env=settings.child_env(os.environ),
        on_fresh_copy=lambda path: replica.fresh_copy(path, engines),
        on_update=(lambda path: dispose_pools(engines)) if engines else None)
    replica = ReadReplica(settings, followers)
    lock = Leadership(settings.databases)
    if not lock.try_lead():
        raise StartupError(
            f"another process already follows {', '.join(str(d.path) for d in settings.databases)}"
            ". Fix: a follower runs one worker per copy: scale pods, not --workers")

    return _Role(handle=replica, serve=followers.serve, close=followers.close,
                 in_place=lambda: followers.wait_ready(math.inf),
                 placed_now=lambda: followers.ready, state=lambda: "restoring",
                 show=lambda routes: routes.serve_follower(replica),
                 release=lock.resign)


def _prepare(settings: Settings) -> tuple[Path, Workdir, str | None]:
    """The blocking part of preflight, in one thread hop (nothing blocking runs on the
    event loop): check the files, find the binary, make the private workdir and write
    Litestream's config in it. Returns the binary, the workdir and the loopback
    address for Litestream's metrics (None when the metrics route is off). A follower
    names each replica through that file, never on its command line."""
    binary = _check_files_and_find_binary(settings)
    workdir = private_workdir()
    try:
        metrics_addr = None
        if settings.role != "follower" and settings.metrics_path:
            metrics_addr = loopback_address()
        write_config(settings, workdir, metrics_addr=metrics_addr)
    except BaseException:
        workdir.remove()
        raise
    return binary, workdir, metrics_addr


def _check_files_and_find_binary(settings: Settings) -> Path:
    """The databases are SQLite (or absent), and the Litestream executable is found
    (or fetched)."""
    for db in settings.databases:
        if not db.is_folder:
            check_database_file(db.path)
        elif settings.restore_if_missing:
            from ._litestream.listing import check_listable  # folders only

            check_listable(db)
    if settings.lease:
        from ._locks.lease import check_lease_possible  # with a lease only

        check_lease_possible(settings.lease_replica)
    return find_litestream_for(settings)
