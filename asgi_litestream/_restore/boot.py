"""Restore databases from their replicas with `litestream restore`."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.to_thread

from .._config.databases import Database
from .._config.settings import Settings
from .._exceptions import RestoreError
from .._litestream.commands import restore_command
from .._litestream.listing import replica_names
from .._litestream.logs import scrub
from .._litestream.replica_errors import classify, error_line

logger = logging.getLogger("asgi_litestream")

_RESTORES_AT_ONCE = 8  # a folder may hold thousands; the store serves several at once


def restore_database(
    binary: Path, config_path: Path, database: Database, env: Mapping[str, str],
    *, overwrite: bool = False, timeout: float = 600.0, secrets: Sequence[str] = (),
) -> int | None:
    """Restore ``database`` from its replica: the txid restored, None when the replica
    is empty.

    The replica is named through the config file, never on the command line, so a
    password in its URL stays in the environment. The copy is restored beside the
    database under a temporary name and renamed into place, so the app can never open
    a half-restored file.
    """
    partial = _prepare(database, overwrite=overwrite)
    try:
        command = restore_command(binary, config_path=config_path, database=database.path,
                                  output=partial, if_replica_exists=True, json=True)
        result = subprocess.run(command, env=dict(env), capture_output=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        remove_partial(partial)
        raise RestoreError(f"restoring {database.path} from {database.replica} took over "
                           f"{timeout}s. Fix: check the replica is reachable") from None
    except BaseException:  # Ctrl+C, a cancelled startup: run() killed the child
        remove_partial(partial)
        raise
    txid = None
    if result.returncode == 0 and partial.exists():
        try:  # read before the copy is put in place: an error leaves nothing behind
            from .points import _document  # the CLI's restore only

            txid = int(_document(result.stdout.decode("utf-8", "replace"))["txid"], 16)
        except BaseException:
            remove_partial(partial)
            raise
    restored = _finish(database, partial, result.returncode, result.stdout + result.stderr,
                       secrets)
    return txid if restored else None


def _prepare(database: Database, *, overwrite: bool) -> Path:
    if database.path.exists() and not overwrite:
        raise RestoreError(f"{database.path} already exists; refusing to overwrite it. Fix: "
                           "move it away, or pass overwrite (--force) to replace it")
    partial = _partial(database.path)
    remove_partial(partial)
    return partial


def _latest(binary: Path, config_path: Path, target: Path, partial: Path) -> list[str]:
    return restore_command(binary, config_path=config_path, database=target, output=partial,
                           if_replica_exists=True)


def _finish(database: Database, partial: Path, code: int, output: bytes,
            secrets: Sequence[str]) -> bool:
    """Rename a finished restore into place; RestoreError naming the cause if it failed."""
    target = database.path
    if code != 0:
        remove_partial(partial)
        said = scrub(error_line(output.decode("utf-8", "replace")), secrets) or "no output"
        failure = classify(said)
        if failure.recognised:
            raise RestoreError(f"restoring {target} from {database.replica} failed: "
                               f"{failure.cause}. Fix: {failure.fix} (exit {code}: {said})")
        raise RestoreError(f"restoring {target} from {database.replica} failed "
                           f"(exit {code}): {said}")
    if not partial.exists():
        return False  # the replica holds no backup
    for suffix in ("-wal", "-shm"):
        remove_partial(Path(str(target) + suffix))  # stale sidecars would corrupt the restored copy
    os.replace(partial, target)
    return True


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.restoring-{os.getpid()}")


def remove_partial(path: Path) -> None:
    """A partial restore, and what Litestream writes on its way there (``<path>.tmp``)."""
    for base in (str(path), f"{path}.tmp"):
        for candidate in (base, base + "-wal", base + "-shm"):
            Path(candidate).unlink(missing_ok=True)


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
    fresh then would replicate an empty database over a good backup. A failure no
    retry can mend (no such bucket, refused credentials: _litestream/replica_errors.py) is a
    RestoreError at once. Cancellable at any point (a SIGTERM during startup): no
    Litestream is left running, and no partial file."""
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
        failure = classify(reason)
        if failure.permanent:
            raise RestoreError(
                f"cannot restore {target}: {failure.cause} (replica {database.replica}). "
                f"Fix: {failure.fix}. Not retried: no retry can mend this, and the app did "
                f"not start, so nothing replicated an empty database over the backup "
                f"(Litestream: {failure.detail})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RestoreError(
                f"could not read the replica {database.replica} to restore {target} "
                f"({attempt} attempts in {timeout:g}s): {failure.describe()}. Fix: check the "
                "replica URL, the credentials and that the storage is reachable from here, "
                "or raise restore_timeout; the app did not start, so nothing replicated an "
                "empty database over the backup")
        wait = min(delay, remaining)
        logger.warning("%s cannot read the replica %s to restore %s (attempt %d): %s; "
                       "retrying in %.0fs, giving up in %.0fs", label, database.replica,
                       target, attempt, failure.describe(), wait, remaining)
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
            restored = await _restore_now(binary, config_path, database, env,
                                          max(deadline - time.monotonic(), 1), secrets)
        finally:
            task_group.cancel_scope.cancel()
    if restored:
        logger.info("%s restored %s from %s in %.1fs", label, target, database.replica,
                    time.monotonic() - started)
    else:  # emptied between the dry run and the restore
        logger.info("%s no backup of %s in %s: starting fresh", label, target,
                    database.replica)
    return restored


async def _restore_now(binary: Path, config_path: Path, database: Database,
                       env: Mapping[str, str], timeout: float, secrets: Sequence[str]) -> bool:
    """:func:`restore_database` as a child the event loop owns: cancelled (a SIGTERM
    during startup), Litestream is killed and the partial file removed at once,
    rather than a thread waiting out the download."""
    partial = _prepare(database, overwrite=False)
    command = _latest(binary, config_path, database.path, partial)
    try:
        with anyio.move_on_after(timeout) as scope:
            result = await anyio.run_process(command, env=dict(env), check=False,
                                              stdin=subprocess.DEVNULL)
    except BaseException:
        remove_partial(partial)
        raise
    if scope.cancelled_caught:
        remove_partial(partial)
        raise RestoreError(f"restoring {database.path} from {database.replica} took over "
                           f"{timeout:.0f}s. Fix: check the replica is reachable, or raise "
                           "restore_timeout for a large database")
    return _finish(database, partial, result.returncode, result.stdout + result.stderr,
                   secrets)


async def _probe(binary: Path, config_path: Path, target: Path, env: Mapping[str, str],
                 secrets: Sequence[str], timeout: float) -> tuple[bool | None, str]:
    """A dry run of the restore: (True, "") a backup exists, (False, "") the replica is
    empty, (None, error) it could not be read (Litestream's error, scrubbed)."""
    command = restore_command(binary, config_path=config_path, database=target,
                              output=_partial(target), dry_run=True)
    with anyio.move_on_after(timeout):
        result = await anyio.run_process(command, env=dict(env), check=False,
                                          stdin=subprocess.DEVNULL)
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode == 0:
            return True, ""
        if "no matching backup" in output:
            return False, ""
        said = error_line(output)
        return None, scrub(said, secrets) if said else f"exit {result.returncode}"
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

    def connect() -> None:
        socket.create_connection(address, timeout=_ATTEMPT_TIMEOUT).close()

    try:
        # The stdlib's errors name the cause (refused, unknown host); anyio's do not.
        # Abandoned when cancelled: a stop during startup does not wait for the connect.
        await anyio.to_thread.run_sync(connect, abandon_on_cancel=True)
    except TimeoutError:
        return f"no TCP connection to {parts.hostname}:{port} within {_ATTEMPT_TIMEOUT:g}s"
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"
    return None


async def _log_progress(label: str, target: Path, started: float) -> None:
    """An operator must tell "restoring a big backup" from "stuck"."""
    while True:
        await anyio.sleep(_PROGRESS_EVERY)
        logger.info("%s still restoring %s (%.0fs)", label, target, time.monotonic() - started)


def config_for_members(settings: Settings, members: Sequence[Database], config_path: Path,
                       env: Mapping[str, str], *, file_name: str
                       ) -> tuple[Path, dict[str, str]]:
    """A config naming a folder's ``members`` one by one, beside ``config_path``, and
    the environment to run Litestream with it. `litestream restore -config` finds only
    `path:` entries, not a `dir:`'s databases (secrets still ${VAR}s, and a name's '$'
    never expanded: to_yaml writes names as data)."""
    listed = dataclasses.replace(settings, databases=tuple(members))
    path = config_path.with_name(file_name)
    path.write_text(listed.to_yaml(), encoding="utf-8")
    return path, listed.child_env(env)


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
        members_config, members_env = config_for_members(settings, absent, config_path,
                                                         env, file_name="restore.yml")
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
