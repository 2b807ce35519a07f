"""The ``Litestream-Position`` header: which transaction of which replica a write
reached, as the primary hands it out and a follower reads it (read-your-writes).

Kept low and small: the primary's ``durable()`` writes it, and a follower parses it,
and neither should import the other's machinery for it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

POSITION_HEADER = "litestream-position"


def replica_key(replica_url: str) -> str:
    """What a primary and its followers agree on for one database: its replica (scheme,
    host and path; no credentials, no query such as the endpoint, no local file name),
    hashed short, so that the header shows a client no bucket or path."""
    parts = urlsplit(replica_url)
    canonical = f"{parts.scheme}://{parts.hostname or ''}/{unquote(parts.path).strip('/')}"
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_KEY = re.compile(r"[0-9a-f]{12}")
_TXID = re.compile(r"[0-9]{1,19}")  # ASCII digits, and below 2**63 (Litestream's TXID)


def format_position(positions: Mapping[str, int]) -> str:
    """``{replica key: txid}`` as a ``Litestream-Position`` value: ``3f2a9c1b0d4e=1843``."""
    return ",".join(f"{key}={txid}" for key, txid in sorted(positions.items()))


def parse_position(value: str) -> dict[str, int]:
    """``{replica key: txid}`` from a ``Litestream-Position`` value. Raises ValueError
    (the client's mistake, a 400) when a part is not ``<key>=<txid>``."""
    found: dict[str, int] = {}
    for part in value.split(",")[:64]:
        key, _, txid = part.strip().partition("=")
        if not (_KEY.fullmatch(key) and _TXID.fullmatch(txid)):
            raise ValueError("a Litestream-Position is <replica key>=<txid>, "
                             "comma-separated, as position_header() writes it")
        found[key] = int(txid)
    return found
