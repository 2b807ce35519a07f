"""What an app holds: ``request.state.litestream`` and ``get_supervisor(name)``.

A read-only view of the replication service, plus the few actions an app may take:
wait for durability, stop and start Litestream, rotate its credentials. The service's
moving parts stay private, so nothing an app does can put it in a state it cannot handle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._config.settings import Settings
from ._state import Role, State
from ._web.view import ServiceView

if TYPE_CHECKING:
    from ._restore.verify import Verification


class Service(ServiceView, Protocol):
    """What a Supervisor needs of a replication service (ReplicationService is one):
    the routes' view, plus its state and the actions an app may take."""

    @property
    def running(self) -> bool: ...

    @property
    def state(self) -> State: ...

    @property
    def role(self) -> Role | None: ...

    @property
    def pid(self) -> int | None: ...

    async def sync(self, *, timeout: float | None = None,
                   database: str | os.PathLike[str] | None = None) -> dict[str, int]: ...

    async def verify(self) -> Verification: ...

    async def start(self) -> None: ...

    async def stop(self) -> bool: ...

    async def rotate_credentials(self, *, access_key_id: str, secret_access_key: str,
                                 session_token: str | None = None) -> None: ...


class Supervisor:
    """The running Litestream of one LitestreamLifespan, as the app sees it."""

    __slots__ = ("_service",)

    def __init__(self, service: Service) -> None:
        self._service = service

    def __repr__(self) -> str:
        return (f"Supervisor(name={self.name!r}, state={self.state.value!r}, "
                f"pid={self.pid!r})")

    @property
    def name(self) -> str:
        return self._service.settings.name

    @property
    def settings(self) -> Settings:
        """The validated options (frozen; secrets are kept out of its repr)."""
        return self._service.settings

    @property
    def running(self) -> bool:
        """Whether the databases are being replicated, by this worker or the leader."""
        return self._service.running

    @property
    def state(self) -> State:
        return self._service.state

    @property
    def role(self) -> Role | None:
        return self._service.role

    @property
    def pid(self) -> int | None:
        """This worker's Litestream process (None on a standby or while down)."""
        return self._service.pid

    @property
    def restarts(self) -> int:
        return self._service.facts().restarts

    @property
    def version(self) -> str | None:
        """Litestream's version, once it has run."""
        return self._service.facts().version

    @property
    def last_flush_ok(self) -> bool | None:
        """Whether the last flush (stop() or shutdown) reached every replica."""
        return self._service.facts().last_flush_ok

    @property
    def config_path(self) -> Path:
        """Litestream's generated config file (no secret in it)."""
        return self._service.config_path

    @property
    def sync_rounds(self) -> int:
        """How many syncs group commit has sent (far fewer than callers under load)."""
        return self._service.facts().sync_rounds

    def status(self) -> dict[str, Any]:
        """The status snapshot, as the status route serves it."""
        return self._service.status().to_json()

    def metrics(self) -> str:
        """The Prometheus text the metrics route serves (ours and Litestream's)."""
        from ._web.metrics import service_metrics  # rendered on demand only

        return service_metrics(self._service)

    async def sync(self, *, timeout: float | None = None,
                   database: str | os.PathLike[str] | None = None) -> dict[str, int]:
        """Wait until the replica holds everything committed before this call.

        For every database, or only ``database``. Concurrent callers share syncs
        (group commit), and a standby worker asks the leader's Litestream. Returns
        ``{path: replicated_txid}``; raises SyncError when Litestream is down or the
        replica does not confirm within ``timeout`` (default ``flush_timeout``) —
        never a false success.
        """
        return await self._service.sync(timeout=timeout, database=database)

    async def verify(self) -> Verification:
        """Prove the backup: restore the replica into a side file (never over the
        database), check that it holds every transaction committed before the call and
        passes SQLite's integrity check. The result also goes to the status."""
        return await self._service.verify()

    async def start(self) -> None:
        """Start Litestream again after stop(); a no-op when it runs."""
        await self._service.start()

    async def stop(self) -> bool:
        """Flush every database to its replica, then stop Litestream (the app keeps
        serving). Returns whether the flush reached every replica."""
        return await self._service.stop()

    async def rotate_credentials(self, *, access_key_id: str, secret_access_key: str,
                                 session_token: str | None = None) -> None:
        """Use new S3 keys from now on, without restarting the app: flush Litestream,
        stop it and start it again with them (tens of milliseconds; durable waits wait
        meanwhile, and it is not counted in ``restarts``). The lease's S3 calls use them
        too. ``session_token``: temporary keys' token (STS, Vault's AWS engine); without
        one, a token in the environment is dropped, as it belonged to the old keys.
        Applies to this worker; with several workers, the one that leads runs
        Litestream (key files, which every worker watches, reach it wherever it is)."""
        await self._service.rotate_credentials(access_key_id=access_key_id,
                                               secret_access_key=secret_access_key,
                                               session_token=session_token)
