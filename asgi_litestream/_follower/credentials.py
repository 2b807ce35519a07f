"""A read replica's S3 keys, rotated without a restart of the app, as a primary's are
(_primary/credentials.py).

Where they came from and when (the status shows both, never the keys), and their
rotation: ``rotate()`` hands every follower the new keys (its `restore -f` and its
probes) and starts its `restore -f` again with them, once; ``watch_files()`` (with key
files) does it when both files hold new keys.

A follower writes nothing, so nothing is flushed first; its copy stays in place and is
read meanwhile. Litestream 0.5.17 seldom resumes over a copy, so the new `restore -f`
usually restores a fresh one beside it and renames it into place (a download of the
database: the status' ``generation`` moves, as after any restart of a follower).
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timezone
from typing import Any

import anyio

from .._config.secret_files import check_keys, watch_key_files
from .._config.settings import Settings
from .._litestream.refusals import KeyRefusal
from .._locks.leader_info import CredentialsStatus
from .group import FollowerSet

logger = logging.getLogger("asgi_litestream")


class FollowerCredentials:
    """The S3 keys of one read replica: their source, when loaded, and their rotation."""

    def __init__(self, settings: Settings, followers: FollowerSet) -> None:
        self.settings = settings
        self.source = settings.credentials_source
        self.loaded_at = datetime.now(timezone.utc)
        self.rotations = 0
        self._followers = followers
        self._lock = anyio.Lock()
        self._rotating = False
        # Any follower's lines count, but not those of one stopping for a rotation.
        self.refusal = KeyRefusal(
            followers.log, name=settings.name, source=lambda: self.source,
            counts=lambda pid: not self._rotating,
            progress=lambda: sum(f.copy_txid or 0 for f in followers.followers))
        followers.run_beside(self._watch_progress)

    def to_json(self) -> dict[str, Any]:
        """The status's ``credentials``, shaped as a primary's: where from, when, the
        rotations, refused or not; never the keys. (Refused keys do not turn readiness
        by themselves: on a read replica it follows the copies' lag.)"""
        return CredentialsStatus.of(source=self.source, loaded_at=self.loaded_at,
                                    refusal=self.refusal, rotations=self.rotations).to_json()

    async def _watch_progress(self) -> None:
        """Refused keys under which the copies move forward again work (an SDK that
        renewed them): checked every health_interval."""
        while True:
            await anyio.sleep(self.settings.health_interval)
            self.refusal.check_progress()

    async def rotate(self, access_key_id: str, secret_access_key: str, *,
                     session_token: str | None = None, source: str = "call") -> None:
        """Use these keys from now on: every follower's `restore -f` starts again with
        them (not counted in ``restarts``). Raises ConfigError for an empty key."""
        variables = check_keys(access_key_id, secret_access_key, session_token)
        self.settings.check_rotatable("access_key_id", access_key_id)
        async with self._lock:
            self.source, self.loaded_at = source, datetime.now(timezone.utc)
            began = time.monotonic()
            self._rotating = True
            try:
                restarted = await self._followers.use_env(
                    variables, secrets=[v for v in variables.values() if v])
            finally:
                self._rotating = False
                self.rotations += 1  # counted once done, as a primary's
            self.refusal.clear()  # judged afresh by the followers that use them
            logger.info("litestream %r: credentials rotated (source %s); %d of %d "
                        "followers started again with them in %d ms", self.settings.name,
                        source, restarted, len(self._followers.followers),
                        (time.monotonic() - began) * 1000)

    async def watch_files(self) -> None:
        """The followers' task (with key files): rotate to the files' keys when both
        are readable, non-empty and new; a change to one only waits one more check.
        It ends with the followers."""
        settings = self.settings
        await watch_key_files(
            (settings.access_key_id_file, settings.secret_access_key_file),
            name=settings.name, interval=settings.health_interval,
            read_at_startup=(settings.access_key_id, settings.secret_access_key),
            rotate=functools.partial(self.rotate, source="file"), stopped=lambda: False)
