"""Positions: the newest transaction a replica holds and the newest one a local file
has replicated, read one way for every backend.

Litestream names every LTX file after the transactions it spans,
``<min hex16>-<max hex16>.ltx``, so a listing is enough to know a position; no file is
downloaded. The layouts differ by backend (measured on 0.5.17, see LITESTREAM.md):

    file://   <path>/ltx/<level>/<name>           (a folder: <path>/<db>/ltx/<level>/…)
    s3://     <prefix>/<level as 4 digits>/<name>  (a folder: <prefix>/<db>/0000/…)
    local     <dir>/.<db>-litestream/ltx/<level>/<name>

Any other replica (``gs://``, ``abs://``, ``sftp://``, typed YAML keys) is asked with
``litestream ltx -level all -json``, which knows every layout. The same file at the
same position on both sides has the same bytes, so a file's checksum (the last 8
bytes of its trailer) tells one history from two that diverged.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import anyio.to_thread

from .._config.databases import Database
from .._config.names import member_name, member_root
from .commands import ltx_command
from .logs import scrub
from .s3 import s3_client

_LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
_S3_LEVEL = re.compile(r"^[0-9]{4}$")
_LTX_TIMEOUT = 30.0


class PositionError(Exception):
    """A replica's position could not be read. ``permanent``: never can be, as
    configured (a folder on a replica that cannot be listed)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Head:
    """The newest transaction on one side (0: nothing), and the LTX file ending there."""

    txid: int = 0
    name: str | None = None  # "<min>-<max>.ltx"
    level: int | None = None


NOTHING = Head()


def head_of(entries: Iterable[tuple[int, str]]) -> Head:
    """The head among (level, file name) pairs; the lowest level wins a tie (level 0
    holds the very file that was uploaded, a higher level a compaction of it)."""
    best = NOTHING
    for level, name in entries:
        match = _LTX_NAME.match(name)
        if match is None:
            continue
        txid = int(match.group(2), 16)
        if txid > best.txid or (txid == best.txid and best.level is not None
                                and level < best.level):
            best = Head(txid, name, level)
    return best


def head_from_names(names: Iterable[str]) -> int | None:
    """The highest txid among LTX file names; None when there is none."""
    head = head_of((0, name) for name in names)
    return head.txid if head.name is not None else None


# -- the local side -------------------------------------------------------------------

def metadata_dir(path: Path) -> Path:
    """Litestream's history of ``path``, beside it."""
    return path.with_name(f".{path.name}-litestream")


def local_head(path: Path) -> Head:
    """What Litestream last recorded for this file here. A file with no local history
    (never replicated from here, or copied without its folder) is at position 0."""
    return head_of(_levels(metadata_dir(path) / "ltx"))


def local_checksum(path: Path, name: str, level: int | None = None) -> bytes | None:
    """The checksum of the local LTX file ``name``, if it is here: at ``level`` first
    (a compaction at another level may carry the same name and other bytes)."""
    root = metadata_dir(path) / "ltx"
    dirs = _level_dirs(root)
    if level is not None:
        dirs.sort(key=lambda d: d.name != str(level))
    for level_dir in dirs:
        found = _tail(level_dir / name)
        if found is not None:
            return found
    return None


def _level_dirs(root: Path) -> list[Path]:
    try:
        return [root / entry for entry in os.listdir(root) if entry.isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _levels(root: Path) -> list[tuple[int, str]]:
    entries = []
    for level_dir in _level_dirs(root):
        try:
            entries += [(int(level_dir.name), name) for name in os.listdir(level_dir)]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return entries


def _tail(path: Path) -> bytes | None:
    try:
        with path.open("rb") as file:
            file.seek(-8, os.SEEK_END)
            return file.read(8)
    except (FileNotFoundError, OSError):
        return None


# -- the replica side -------------------------------------------------------------------

Backend = Literal["file", "s3", "litestream"]


def backend(db: Database) -> Backend:
    """How the replica of ``db`` is read: listed directly, or asked of Litestream."""
    config = db.replica_config
    if config is not None and not isinstance(config.get("url"), str):
        return "litestream"  # typed YAML keys: Litestream knows what they mean
    parts = urlsplit(db.replica_url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and "$" not in parts.path:
        return "file"
    if parts.scheme == "s3" and "$" not in db.replica_url and _has_boto3():
        return "s3"
    return "litestream"


def replica_heads(db: Database, env: Mapping[str, str], *, binary: Path | None = None,
                  config_path: Path | None = None, secrets: Sequence[str] = (),
                  timeout: float | None = None) -> dict[str, Head]:
    """Blocking. For a database: ``{"": head}``. For a folder: each member database's
    head by file name, from one listing (members with nothing replicated are absent).
    ``timeout`` bounds each request to S3 and `litestream ltx`. Raises PositionError
    when the replica cannot be read."""
    kind = backend(db)
    try:
        if kind == "file":
            return _file_heads(db)
        if kind == "s3":
            return _s3_heads(db, env, timeout)
    except PositionError:
        raise
    except Exception as exc:  # boto3's and the file system's errors alike
        raise PositionError(scrub(str(exc), secrets) or type(exc).__name__) from exc
    if db.is_folder:
        raise PositionError(f"the members of a folder cannot be listed on "
                            f"{urlsplit(db.replica_url).scheme}:// replicas",
                            permanent=True)
    if binary is None:
        raise PositionError("no litestream binary to read the replica with")
    return {"": _ltx_head(binary, db, env, config_path, secrets, timeout or _LTX_TIMEOUT)}


async def replica_head(db: Database, env: Mapping[str, str], *, binary: Path,
                       config_path: Path | None = None, secrets: Sequence[str] = (),
                       timeout: float) -> Head:
    """:func:`replica_heads` of one database for the event loop, within ``timeout``
    (else TimeoutError): a listing runs in a worker thread, abandoned when cancelled (it
    holds no child); `litestream ltx` runs as a child, killed at the deadline or when
    cancelled, never left running."""
    with anyio.fail_after(timeout):
        if backend(db) != "litestream" or db.is_folder:
            heads = await anyio.to_thread.run_sync(functools.partial(
                replica_heads, db, env, binary=binary, config_path=config_path,
                secrets=secrets, timeout=timeout), abandon_on_cancel=True)
            return heads.get("", NOTHING)
        result = await anyio.run_process(_ltx_argv(binary, db, config_path), env=dict(env),
                                         check=False, stdin=subprocess.DEVNULL)
    return _ltx_answer(result.returncode, result.stdout.decode("utf-8", "replace"),
                       result.stderr.decode("utf-8", "replace"), secrets)


def replica_checksum(db: Database, head: Head, env: Mapping[str, str]) -> bytes | None:
    """Blocking. The checksum of the replica's file ``head.name`` (None: not readable
    this way, e.g. a replica read through Litestream)."""
    if head.name is None or head.level is None:
        return None
    kind = backend(db)
    if kind == "file":
        return _tail(_file_root(db) / "ltx" / str(head.level) / head.name)
    if kind == "s3":
        bucket, prefix, query = _s3_location(db)
        key = "/".join(p for p in (prefix, f"{head.level:04d}", head.name) if p)
        try:
            body = s3_client(query, env).get_object(Bucket=bucket, Key=key, Range="bytes=-8")
            data: bytes = body["Body"].read()
        except Exception:  # unreadable: the comparison is then unknown, not "diverged"
            return None
        return data if len(data) == 8 else None
    return None


def _file_root(db: Database) -> Path:
    # As Litestream names it on disk: the URL's path decoded, then escaped again.
    return Path(member_root(db.replica_url))


def _file_heads(db: Database) -> dict[str, Head]:
    root = _file_root(db)
    if not db.is_folder:
        return {"": head_of(_levels(root / "ltx"))}
    try:
        members = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    heads = {}
    for entry in members:
        name, _ = member_name(entry)  # file names are stored URL-escaped
        if name is not None:
            heads[name] = head_of(_levels(root / entry / "ltx"))
    return {name: head for name, head in heads.items() if head.txid}


def _s3_location(db: Database) -> tuple[str, str, dict[str, str]]:
    """Bucket, key prefix and query, as Litestream reads them: the path unescaped
    (``join_url`` escapes a file stem such as ``my app``; the keys hold it raw)."""
    parts = urlsplit(db.replica_url)
    return parts.netloc, unquote(parts.path).strip("/"), dict(parse_qsl(parts.query))


def _s3_heads(db: Database, env: Mapping[str, str], timeout: float | None) -> dict[str, Head]:
    bucket, prefix, query = _s3_location(db)
    base = f"{prefix}/" if prefix else ""
    entries: dict[str, list[tuple[int, str]]] = {}
    bounded = {} if timeout is None else {"connect_timeout": timeout, "read_timeout": timeout}
    paginator = s3_client(query, env, **bounded).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Contents", ()):
            rest = item["Key"][len(base):].split("/")
            # A database: <level>/<name>; a folder: <member>/<level>/<name>.
            if len(rest) == (3 if db.is_folder else 2) and _S3_LEVEL.match(rest[-2]):
                member = rest[0] if db.is_folder else ""
                entries.setdefault(member, []).append((int(rest[-2]), rest[-1]))
    heads = {member: head_of(found) for member, found in entries.items()}
    if not db.is_folder:
        return {"": heads.get("", NOTHING)}
    return {name: head for name, head in heads.items() if head.txid}


def _ltx_argv(binary: Path, db: Database, config_path: Path | None) -> list[str]:
    if config_path is not None:
        return ltx_command(binary, config_path=config_path, database=db.path)
    return ltx_command(binary, replica_url=db.replica_url)


def _ltx_head(binary: Path, db: Database, env: Mapping[str, str], config_path: Path | None,
              secrets: Sequence[str], timeout: float) -> Head:
    try:
        result = subprocess.run(_ltx_argv(binary, db, config_path), env=dict(env),
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PositionError(f"litestream ltx gave no answer within {timeout:g}s") from None
    return _ltx_answer(result.returncode, result.stdout, result.stderr, secrets)


def _ltx_answer(code: int, stdout: str, stderr: str, secrets: Sequence[str]) -> Head:
    if code != 0:
        lines = (stdout + stderr).strip().splitlines()
        raise PositionError(scrub(lines[-1], secrets) if lines else
                            f"litestream ltx exited with code {code}")
    return head_from_ltx_json(stdout)


def head_from_ltx_json(text: str) -> Head:
    """The head in the output of ``litestream ltx -level all -json`` (a JSON list of
    ``{level, min_txid, max_txid, ...}``; ``null`` or empty when there is nothing)."""
    start = text.find("[")
    try:
        rows: Any = json.loads(text[start:]) if start >= 0 else []
    except ValueError as exc:
        raise PositionError(f"unreadable litestream ltx output: {exc}") from None
    return head_of((int(row["level"]), f"{row['min_txid']}-{row['max_txid']}.ltx")
                   for row in rows or () if isinstance(row, dict))


def _has_boto3() -> bool:
    return importlib.util.find_spec("boto3") is not None


# -- the comparison ------------------------------------------------------------------------

Verdict = Literal["fresh", "in_step", "behind", "diverged"]


def compare(local: Head, replica: Head, *, same_file: bool | None) -> Verdict:
    """``fresh``: the replica holds nothing. ``behind``: it holds transactions this file
    lacks. ``diverged``: this file is at or past the replica's head, but its own file
    at that position differs (``same_file`` False: another history). ``in_step``: at
    or ahead of the replica, from the same history (or not known to differ)."""
    if replica.txid == 0:
        return "fresh"
    if local.txid < replica.txid:
        return "behind"
    if same_file is False:
        return "diverged"
    return "in_step"
