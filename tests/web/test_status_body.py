"""The status route's JSON, encoded by the piece: byte for byte the snapshot's JSON,
whatever changed between two snapshots (pure, no process)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

from asgi_litestream._web.status_body import StatusBody
from tests.helpers import status_snapshot


def database(rnd: random.Random, index: int) -> dict[str, Any]:
    """One database's JSON, with values that test the encoding: quotes, backslashes,
    non-ASCII, a %, unknowns."""
    return {
        "path": rnd.choice([f"/data/t{index}.db", f'/d/we"ird\\{index}\n.db',
                            f"/d/ünï%s{index}.db"]),
        "replica": rnd.choice(["s3://b/x?sas=***", "file:///r/%d", "é"]),
        "litestream_status": rnd.choice([None, "replicating", "open"]),
        "txid": rnd.choice([None, 0, 5, 2**40]), "replicated_txid": rnd.choice([None, 3, 5]),
        "lag": rnd.choice([None, 0, 2]),
        "behind_s": rnd.choice([None, 0.0, 0.123, 12.5, 1e-7, 3, 1e20]),
        "last_sync_at": rnd.choice([None, "2026-09-21T14:13:20.451218973Z", 'x"\\y%s', "ü"]),
        "healthy": rnd.choice([None, True, False]),
        "error": rnd.choice([None, "boom %s", 'q"uote']),
        "last_errors": rnd.choice([[], ["a"], ["é", "%d"]]),
    }


def expected(status: Any) -> bytes:
    return json.dumps(status.to_json(), separators=(",", ":")).encode()


def test_every_body_is_the_snapshots_json() -> None:
    """Successive snapshots (new databases, moved delays, changed positions, health
    and errors, none at all) each give exactly json.dumps of their JSON."""
    rnd = random.Random(24)
    body = StatusBody()
    for _ in range(200):
        status = status_snapshot({
            "name": rnd.choice(["app", 'n"m']), "status": "running", "state": "running",
            "databases": [database(rnd, i) for i in range(rnd.choice([0, 1, 3, 20]))]})
        for _ in range(rnd.choice([1, 2, 3])):
            full, public = body.render(status)
            assert full == expected(status)
            assert json.loads(public) == {"status": "running", "state": "running",
                                          "healthy": None, "restarts": 0}
            changed = rnd.randrange(len(status.databases)) if status.databases else None
            status = replace(status, databases=tuple(
                replace(db, behind_s=rnd.choice([None, 0.5, 2.25]),
                        last_sync_at=rnd.choice([None, "2026-09-21T14:13:22Z"]),
                        **({"txid": 7, "healthy": False, "last_errors": ("new",)}
                           if index == changed else {}))
                for index, db in enumerate(status.databases)))


def test_the_same_databases_are_not_encoded_again() -> None:
    """The same tuple of databases (no poll since): its JSON is reused as it was."""
    rnd = random.Random(1)
    status = status_snapshot({"name": "app", "databases": [database(rnd, i)
                                                           for i in range(5)]})
    body = StatusBody()
    first = body.databases(status.databases)
    assert body.databases(status.databases) is first
