"""Supervisors by name, and the seed API: start_litestream / status / stop_litestream /
rotate_credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._exceptions import ConfigError, SupervisorLookupError
from ._handle import Supervisor

if TYPE_CHECKING:
    from ._follower.replica import ReadReplica

_supervisors: dict[str, Supervisor | ReadReplica] = {}


def register(name: str, supervisor: Supervisor | ReadReplica) -> None:
    if name in _supervisors:
        raise ConfigError(
            "name", name, "another LitestreamLifespan in this process already uses it",
            "give each LitestreamLifespan its own name=",
        )
    _supervisors[name] = supervisor


def unregister(name: str, supervisor: Supervisor | ReadReplica) -> None:
    if _supervisors.get(name) is supervisor:
        del _supervisors[name]


def get_supervisor(name: str = "litestream") -> Supervisor | ReadReplica:
    """The supervisor of the running LitestreamLifespan called ``name`` (a
    :class:`ReadReplica` when it runs with ``role="follower"``)."""
    try:
        return _supervisors[name]
    except KeyError:
        known = ", ".join(repr(n) for n in sorted(_supervisors)) or "none"
        raise SupervisorLookupError(
            f"no LitestreamLifespan named {name!r} is running in this process (running: "
            f"{known}). Fix: call this from inside the app once its lifespan has started, "
            "with the name= given to the middleware"
        ) from None


async def start_litestream(name: str = "litestream") -> None:
    """Start Litestream again after stop_litestream(); a no-op when it runs."""
    await get_supervisor(name).start()


async def stop_litestream(name: str = "litestream") -> bool:
    """Flush every database to its replica and stop Litestream; the app stays up.

    Returns whether the flush reached the replica for every database.
    """
    return await get_supervisor(name).stop()


async def rotate_credentials(name: str = "litestream", *, access_key_id: str,
                             secret_access_key: str, session_token: str | None = None
                             ) -> None:
    """Use new S3 keys from now on: Litestream is flushed and restarted with them (the
    app stays up; durable waits wait meanwhile); on a read replica, each follower's
    `restore -f`. See Supervisor.rotate_credentials and ReadReplica.rotate_credentials."""
    await get_supervisor(name).rotate_credentials(access_key_id=access_key_id,
                                                  secret_access_key=secret_access_key,
                                                  session_token=session_token)


def status(name: str = "litestream") -> Literal["running", "down"]:
    """``"running"`` while Litestream replicates; ``"down"`` otherwise, including
    when no LitestreamLifespan of that name runs in this process."""
    supervisor = _supervisors.get(name)
    return "running" if supervisor is not None and supervisor.running else "down"
