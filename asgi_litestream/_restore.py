"""Restore databases from their replicas with `litestream restore`."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.to_thread

from ._config import Settings
from ._databases import Database
from ._exceptions import RestoreError
from ._listing import local_txid, replica_names, replica_txid
from ._logs import scrub

logger = logging.getLogger("asgi_litestream")

_RESTORES_AT_ONCE = 8  # a folder may hold thousands; the store serves several at once


def restore_database(
    binary: Path, config_path: Path, database: Database, env: Mapping[str, str],
    *, overwrite: bool = False, timeout: float = 600.0, secrets: Sequence[str] = (),
) -> bool:
    """Restore ``database`` from its replica. Returns False when the replica is empty.

    The replica is named through the config file, never on the command line, so a
    password in its URL stays in the environment. The copy is restored beside the
    database under a temporary name and renamed into place, so the app can never open
    a half-restored file.
    """
    target = database.path
    if target.exists() and not overwrite:
        raise RestoreError(f"{target} already exists; refusing to overwrite it. Fix: move "
                           "it away, or pass overwrite (--force) to replace it")
    partial = _partial(target)
    _remove(partial)
    command = [str(binary), "restore", "-config", str(config_path), "-if-replica-exists",
               "-o", str(partial), str(target)]
    try:
        result = subprocess.run(command, env=dict(env), capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        _remove(partial)
        raise RestoreError(f"restoring {target} from {database.replica} took over "
                           f"{timeout}s. Fix: check the replica is reachable") from None
    lines = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0:
        _remove(partial)
        reason = scrub(lines[-1], secrets) if lines else "no output"
        raise RestoreError(f"restoring {target} from {database.replica} failed "
                           f"(exit {result.returncode}): {reason}")
    if not partial.exists():
        return False  # the replica holds no backup
    for suffix in ("-wal", "-shm"):
        _remove(Path(str(target) + suffix))  # stale sidecars would corrupt the restored copy
    os.replace(partial, target)
    return True


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.restoring-{os.getpid()}")


def _remove(path: Path) -> None:
    for candidate in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        candidate.unlink(missing_ok=True)


# -- on boot: never start fresh on a replica that could not be read -----------------------

_ATTEMPT_TIMEOUT = 5.0  # a dry run only lists files: a second or two, unless stuck
_MAX_RETRY_DELAY = 8.0
_PROGRESS_EVERY = 5.0


async def restore_on_boot(
    binary: Path, config_path: Path, database: Database, env: Mapping[str, str],
    *, name: str, timeout: float, secrets: Sequence[str],
) -> bool:
    """Restore a missing database before the app starts. False: the replica holds no
    backup, start fresh. A replica that cannot be reached or read is retried (each
    attempt logged with the reason) until ``timeout``, then RestoreError: starting
    fresh then would replicate an empty database over a good backup."""
    deadline = time.monotonic() + timeout
    target = database.path
    label = f"litestream {name!r}:"
    delay, attempt = 1.0, 0
    while True:
        attempt += 1
        reason = await _endpoint_problem(database.replica_url, env)
        found = None
        if reason is None:
            # Doubling: a slow but healthy replica (a big listing, a far region) gets
            # its time, and a dead one is still named within seconds.
            attempt_timeout = min(_ATTEMPT_TIMEOUT * 2 ** (attempt - 1), 60.0)
            found, reason = await _probe(
                binary, config_path, target, env, secrets,
                min(attempt_timeout, max(deadline - time.monotonic(), 1)))
        if found is not None:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RestoreError(
                f"could not read the replica {database.replica} to restore {target} "
                f"({attempt} attempts in {timeout:g}s): {reason}. Fix: check the replica "
                "URL, the credentials and that the storage is reachable from here, or raise "
                "restore_timeout; the app did not start, so nothing replicated an empty "
                "database over the backup")
        wait = min(delay, remaining)
        logger.warning("%s cannot read the replica %s to restore %s (attempt %d): %s; "
                       "retrying in %.0fs, giving up in %.0fs", label, database.replica,
                       target, attempt, reason, wait, remaining)
        await anyio.sleep(wait)
        delay = min(delay * 2, _MAX_RETRY_DELAY)
    if not found:
        logger.info("%s no backup of %s in %s: starting fresh", label, target,
                    database.replica)
        return False
    logger.info("%s %s is missing; restoring it from %s", label, target, database.replica)
    started = time.monotonic()
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(_log_progress, label, target, started)
        try:
            # restore_database kills Litestream at the same deadline.
            restored = await anyio.to_thread.run_sync(functools.partial(
                restore_database, binary, config_path, database, env,
                timeout=max(deadline - time.monotonic(), 1), secrets=secrets))
        finally:
            task_group.cancel_scope.cancel()
    if restored:
        logger.info("%s restored %s from %s in %.1fs", label, target, database.replica,
                    time.monotonic() - started)
    else:  # emptied between the dry run and the restore
        logger.info("%s no backup of %s in %s: starting fresh", label, target,
                    database.replica)
    return restored


async def _probe(binary: Path, config_path: Path, target: Path, env: Mapping[str, str],
                 secrets: Sequence[str], timeout: float) -> tuple[bool | None, str]:
    """A dry run of the restore: (True, "") a backup exists, (False, "") the replica is
    empty, (None, reason) it could not be read."""
    command = [str(binary), "restore", "-config", str(config_path), "-dry-run",
               "-o", str(_partial(target)), str(target)]
    with anyio.move_on_after(timeout):
        result = await anyio.run_process(command, env=dict(env), check=False,
                                          stdin=subprocess.DEVNULL)
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode == 0:
            return True, ""
        if "no matching backup" in output:
            return False, ""
        lines = output.strip().splitlines()
        return None, scrub(lines[-1], secrets) if lines else f"exit {result.returncode}"
    return None, f"no answer within {timeout:.0f}s (unreachable, or a hung endpoint)"


async def _endpoint_problem(replica_url: str, env: Mapping[str, str]) -> str | None:
    """Why the replica's explicit endpoint (``?endpoint=``) cannot be connected to, if
    it cannot: Litestream itself retries a refused connection for minutes in silence.
    Not asked behind a proxy, which Litestream uses and a direct connection would not."""
    if any(env.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                       "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = dict(parse_qsl(urlsplit(replica_url).query)).get("endpoint", "")
    parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    if not endpoint or not parts.hostname:
        return None
    port = parts.port or (80 if parts.scheme == "http" else 443)
    address = (parts.hostname, port)
    try:
        # The stdlib's errors name the cause (refused, unknown host); anyio's do not.
        connection = await anyio.to_thread.run_sync(
            functools.partial(socket.create_connection, address, timeout=_ATTEMPT_TIMEOUT))
    except TimeoutError:
        return f"no TCP connection to {parts.hostname}:{port} within {_ATTEMPT_TIMEOUT:g}s"
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"
    connection.close()
    return None


async def _log_progress(label: str, target: Path, started: float) -> None:
    """An operator must tell "restoring a big backup" from "stuck"."""
    while True:
        await anyio.sleep(_PROGRESS_EVERY)
        logger.info("%s still restoring %s (%.0fs)", label, target, time.monotonic() - started)


async def restore_missing(binary: Path, config_path: Path, settings: Settings,
                          env: Mapping[str, str], *, on_start: Callable[[], None]) -> None:
    """Restore on boot every configured database whose file does not exist, and every
    database a folder's replica holds that the folder lacks (several at once)."""
    missing = [db for db in settings.databases if not db.is_folder and not db.path.exists()]
    absent: list[Database] = []
    for folder in (db for db in settings.databases if db.is_folder):
        names = await anyio.to_thread.run_sync(replica_names, folder, env)
        here = set(await anyio.to_thread.run_sync(os.listdir, folder.path))
        held = [name for name in names if fnmatch.fnmatchcase(name, str(folder.pattern))]
        gone = [folder.member(folder.path / name) for name in held if name not in here]
        logger.info("litestream %r: the replica of %s holds %d database(s), %d missing here",
                    settings.name, folder.where, len(held), len(gone))
        absent += gone
    if not missing and not absent:
        return
    on_start()
    jobs = [(db, config_path, env) for db in missing]
    if absent:
        # `litestream restore -config` finds only `path:` entries, not a `dir:`'s
        # databases: name them in a config of their own (secrets still ${VAR}s).
        listed = dataclasses.replace(settings, databases=tuple(absent))
        members_config = config_path.with_name("restore.yml")
        members_config.write_text(listed.to_yaml())
        members_env = listed.child_env(env)
        jobs += [(db, members_config, members_env) for db in absent]
    limiter = anyio.CapacityLimiter(_RESTORES_AT_ONCE)
    errors: list[RestoreError] = []

    async def restore_one(db: Database, config: Path, child_env: Mapping[str, str]) -> None:
        async with limiter:
            if errors:
                return  # startup fails anyway: do not start more downloads
            try:
                await restore_on_boot(binary, config, db, child_env, name=settings.name,
                                      timeout=settings.restore_timeout,
                                      secrets=settings.secrets())
            except RestoreError as exc:
                errors.append(exc)  # raised plain below, not in an ExceptionGroup

    async with anyio.create_task_group() as task_group:
        for job in jobs:
            task_group.start_soon(restore_one, *job)
    if errors:
        raise errors[0]


async def replace_if_behind(binary: Path, config_path: Path, settings: Settings,
                            env: Mapping[str, str], *, on_start: Callable[[], None]) -> None:
    """With the lease just taken: a database file here that is *behind* its replica
    (another host wrote since this file was last replicated, or the app created it
    before the lease was ours) is moved aside (``<db>.behind-<unix time>``) and
    restored, so that replication never continues from a stale file. A file at
    or ahead of the replica is kept: it holds rows the replica will receive."""
    for db, ours, theirs in await databases_behind(settings, env):
        aside = db.path.with_name(f"{db.path.name}.behind-{int(time.time())}")
        logger.warning("litestream %r: %s is behind its replica (txid %d here, %d in %s): "
                       "moving it to %s and restoring the replica's", settings.name,
                       db.path, ours, theirs, db.replica, aside.name)
        on_start()
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(db.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))
        shutil.rmtree(db.path.with_name(f".{db.path.name}-litestream"), ignore_errors=True)
        await restore_on_boot(binary, config_path, db, env, name=settings.name,
                              timeout=settings.restore_timeout, secrets=settings.secrets())


async def databases_behind(settings: Settings, env: Mapping[str, str]
                           ) -> list[tuple[Database, int, int]]:
    """(database, txid here, txid in the replica) for each database file here whose
    replica holds newer transactions (a folder's databases are not compared)."""
    def positions(db: Database) -> tuple[int, int]:
        return local_txid(db.path), replica_txid(db, env)

    behind = []
    for db in settings.databases:
        if not db.is_folder and db.path.exists():
            ours, theirs = await anyio.to_thread.run_sync(positions, db)
            if theirs > ours:
                behind.append((db, ours, theirs))
    return behind
