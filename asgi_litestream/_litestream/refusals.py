"""Keys the storage refuses while Litestream runs, heard in its warning lines: one
:class:`KeyRefusal` per set of keys in use (a primary's, a read replica's).

Litestream never exits on a refused key: it retries and backs off for minutes, logging
``monitor error`` (a follower's ``restore -f`` may exit). So the refusal is read from
its lines (:func:`refused_keys`): from then on the status says ``credentials:
rejected`` and since when, and one error line names where the keys came from and what
to do. New keys clear it (``clear()``, at a rotation), and so does the replica or the
copy moving forward again (``check_progress()``: credentials an SDK renewed by itself,
permissions granted back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from .logs import LitestreamLog
from .replica_errors import ReplicaFailure, refused_keys

logger = logging.getLogger("asgi_litestream")

# Where the keys came from → what to do when the storage refuses them.
FIXES = {
    "file": "write working keys into access_key_id_file and secret_access_key_file "
            "(applied within health_interval, no restart)",
    "call": "call rotate_credentials() with working keys",
    "option": "call rotate_credentials() with working keys, or restart with them in "
              "access_key_id and secret_access_key",
    "environment": "call rotate_credentials() with working keys, or restart with them "
                   "in ASGI_LITESTREAM_ACCESS_KEY_ID and ASGI_LITESTREAM_SECRET_ACCESS_KEY",
    "default chain": "check what the AWS default chain finds here (AWS_* variables, "
                     "AWS_PROFILE, the web identity token file, the container or "
                     "instance role) and its permissions on the bucket",
}


def iso(moment: datetime) -> str:
    """A time as the status writes it: ISO 8601 in UTC, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class KeyRefusal:
    """Whether the storage refuses the keys in use, as Litestream's lines tell."""

    def __init__(self, log: LitestreamLog, *, name: str, source: Callable[[], str],
                 counts: Callable[[int], bool], progress: Callable[[], int],
                 on_change: Callable[[], None] = lambda: None) -> None:
        """``source()``: where the keys in use came from; ``counts(pid)``: whether that
        process's lines count (not those of one stopping for a rotation);
        ``progress()``: the replicas' (or copies') positions, summed."""
        self.failure: ReplicaFailure | None = None
        self.since: datetime | None = None
        self.changes = 0  # bumped at every change
        self._name = name
        self._source = source
        self._counts = counts
        self._progress = progress
        # The positions at the first poll after the refusal (None: not polled since):
        # an upload made just before the refusal must not read as the keys working.
        self._baseline: int | None = None
        self._on_change = on_change
        log.watch(self._heard)

    def _heard(self, line: str, pid: int) -> None:
        if self.failure is not None or not self._counts(pid):
            return
        failure = refused_keys(line)
        if failure is None:
            return
        self.failure, self.since = failure, datetime.now(timezone.utc)
        self._baseline = None
        self._changed()
        source = self._source()
        logger.error("litestream %r: the replica refuses the S3 keys in use (source %s): "
                     "%s; the replica is out of reach until they work. Fix: %s", self._name,
                     source, failure.cause, FIXES.get(source, FIXES["call"]))

    def check_progress(self) -> None:
        """After each poll: refused keys under which the positions move on, from one
        poll after the refusal to a later one, work again. (With nothing written, the
        refusal stays until new keys come.)"""
        if self.failure is None:
            return
        now = self._progress()
        if self._baseline is None:
            self._baseline = now
        elif now > self._baseline:
            logger.info("litestream %r: the replica accepts the S3 keys again",
                        self._name)
            self.clear()

    def clear(self) -> None:
        """New keys: judged afresh by the lines of the processes that use them."""
        if self.failure is not None:
            self.failure = self.since = None
            self._changed()

    def _changed(self) -> None:
        self.changes += 1
        self._on_change()
