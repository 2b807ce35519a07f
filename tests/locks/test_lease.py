"""The lease in a file:// replica, the lock object's format (upstream's), and which
replica URLs can hold a lease."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from asgi_litestream import ConfigError
from asgi_litestream._locks.lease import (
    Lease,
    LeaseHeld,
    LeaseStoreError,
    check_lease_possible,
    decode,
    default_owner,
    encode,
    format_time,
    parse_time,
)
from asgi_litestream._locks.lease_stores import FileLeaseStore, S3LeaseStore, lease_store
from tests import lease_contract as contract


def store(replica: Path, owner: str, timeout: float = 5.0) -> FileLeaseStore:
    found = lease_store(f"file://{replica}", {}, owner=owner, timeout=timeout)
    assert isinstance(found, FileLeaseStore)
    return found


@pytest.fixture
def replica(tmp_path: Path) -> Path:
    return tmp_path / "replica"


def test_one_holder_at_a_time(replica: Path) -> None:
    """A second owner is refused while the lease is held, told who holds it and until when."""
    contract.one_holder_at_a_time(store(replica, "a:1"), store(replica, "b:2"))


def test_renewal_moves_only_the_expiry(replica: Path) -> None:
    """Renewing keeps the generation, moves the expiry, and outdates the old copy."""
    contract.renewal_moves_only_the_expiry(store(replica, "a:1"))


def test_takeover_only_after_expiry(replica: Path) -> None:
    """An expired lease is taken over with generation + 1; its old holder has lost it."""
    contract.takeover_only_after_expiry(store(replica, "a:1"), store(replica, "b:2"))


def test_take_over_from_a_known_gone_holder(replica: Path) -> None:
    """An unexpired lease is taken over only while it is the one seen."""
    contract.take_over_from_a_known_gone_holder(store(replica, "a:1"), store(replica, "b:2"))


def test_release_frees_at_once(replica: Path) -> None:
    """A released lease is free at once; releasing twice is harmless."""
    contract.release_frees_at_once(store(replica, "a:1"), store(replica, "b:2"))


def test_upstreams_lock_is_honoured(replica: Path) -> None:
    """A lock.json as upstream writes it (nine digits, a local offset) is held, then taken
    over with its generation + 1 once expired."""
    replica.mkdir()
    contract.upstream_lock_is_honoured((replica / "lock.json").write_bytes,
                                       store(replica, "a:1"))


@pytest.mark.parametrize("expired", [False, True], ids=["absent", "expired"])
def test_exactly_one_of_many_wins(replica: Path, expired: bool) -> None:
    """Threads racing for the lease (absent: the hard link; expired: the flock'd swap):
    exactly one wins."""
    contract.exactly_one_wins_a_race([store(replica, f"w:{i}") for i in range(8)],
                                     expired=expired)


def test_the_file_is_upstreams_json(replica: Path) -> None:
    """lock.json holds upstream's three fields, in Go's compact JSON; no temporary file
    is left behind."""
    lease = store(replica, "host:42").acquire(60)
    text = (replica / "lock.json").read_text()
    fields = json.loads(text)
    assert list(fields) == ["generation", "expires_at", "owner"]
    assert text == json.dumps(fields, separators=(",", ":"))
    assert (fields["generation"], fields["owner"]) == (1, "host:42")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", fields["expires_at"])
    assert parse_time(fields["expires_at"]) == lease.expires_at
    assert [p.name for p in replica.iterdir()] == ["lock.json"]


def test_a_lock_file_that_is_no_lease_is_an_error(replica: Path) -> None:
    """A lock.json that is not a lease is reported with its path, never overwritten."""
    replica.mkdir()
    (replica / "lock.json").write_text("not json")
    with pytest.raises(LeaseStoreError, match=re.escape(str(replica / "lock.json"))):
        store(replica, "a:1").acquire(60)
    assert (replica / "lock.json").read_text() == "not json"


def test_a_stuck_mutex_fails_the_call_instead_of_hanging(replica: Path) -> None:
    """A renewal that cannot get lock.json.mutex within the timeout raises LeaseStoreError."""
    mine = store(replica, "a:1", timeout=0.05)
    lease = mine.acquire(60)
    held = os.open(replica / "lock.json.mutex", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LeaseStoreError, match="stayed locked"):
            mine.renew(lease, 60)
    finally:
        os.close(held)
    assert mine.renew(lease, 60).generation == 1


def test_an_unwritable_replica_is_a_store_error(tmp_path: Path) -> None:
    """A replica path through a regular file is a LeaseStoreError, not an OSError."""
    (tmp_path / "file").write_text("")
    with pytest.raises(LeaseStoreError, match="Not a directory"):
        store(tmp_path / "file" / "replica", "a:1").acquire(60)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
def test_a_ttl_must_be_positive(replica: Path, ttl: float) -> None:
    """A lease of no time is a ValueError, and nothing is written."""
    with pytest.raises(ValueError, match="ttl"):
        store(replica, "a:1").acquire(ttl)
    assert not replica.exists()


def test_go_times_parse_with_nanoseconds_and_offsets() -> None:
    """Go's RFC3339Nano: up to nine digits (cut to microseconds), Z or an offset."""
    utc = timezone.utc
    cases = {
        "2026-11-30T14:00:00.123456789Z": datetime(2026, 11, 30, 14, 0, 0, 123456, utc),
        "2026-11-30T14:00:00Z": datetime(2026, 11, 30, 14, 0, 0, 0, utc),
        "2026-11-30T14:00:00.5Z": datetime(2026, 11, 30, 14, 0, 0, 500000, utc),
        "2026-11-30T15:30:00.000000001+01:30": datetime(2026, 11, 30, 14, 0, 0, 0, utc),
        "2026-11-30T07:00:00.25-07:00": datetime(2026, 11, 30, 14, 0, 0, 250000, utc),
        "0001-01-01T00:00:00Z": datetime(1, 1, 1, tzinfo=utc),
    }
    for text, expected in cases.items():
        parsed = parse_time(text)
        assert parsed == expected and parsed.tzinfo == utc, text


@pytest.mark.parametrize("text", ["2026-11-30 14:00:00Z", "2026-11-30T14:00:00",
                                  "2026-11-30T14:00:00.Z", "2026-13-01T00:00:00Z",
                                  "2026-11-30T14:00:00+24:00", "yesterday"])
def test_times_go_would_refuse_are_refused(text: str) -> None:
    """Not RFC 3339 (no zone, a space, a bad month or offset): a ValueError."""
    with pytest.raises(ValueError):
        parse_time(text)


def test_times_are_written_as_go_writes_them() -> None:
    """UTC, Z, and trailing fractional zeros dropped, as Go's RFC3339Nano does."""
    utc = timezone.utc
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 120000, utc)) == "2026-01-02T03:04:05.12Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 0, utc)) == "2026-01-02T03:04:05Z"
    east = datetime(2026, 1, 2, 4, 4, 5, 1, timezone(timedelta(hours=1)))
    assert format_time(east) == "2026-01-02T03:04:05.000001Z"


def test_missing_fields_read_as_gos_zero_values() -> None:
    """As Go decodes it: no owner is "", no expiry is year 1 (so expired); an empty owner
    is left out when writing (omitempty)."""
    lease = decode(b'{"generation":2}', etag="e")
    assert (lease.generation, lease.owner, lease.expired()) == (2, "", True)
    nulls = decode(b'{"generation":null,"expires_at":null,"owner":null}', etag="e")
    assert (nulls.generation, nulls.owner, nulls.expired()) == (0, "", True)
    assert json.loads(encode(1, datetime.now(timezone.utc), "")).keys() == {
        "generation", "expires_at"}


@pytest.mark.parametrize("data", [b"[]", b'{"generation":"1"}', b'{"generation":1.5}',
                                  b'{"generation":true}', b'{"expires_at":5}',
                                  b'{"owner":7}', b'{"owner":[]}', b'{"generation":""}', b"\xff"])
def test_a_malformed_lease_is_a_value_error(data: bytes) -> None:
    """Wrong types or bytes that are not JSON are refused, not guessed at."""
    with pytest.raises(ValueError):
        decode(data, etag="e")


def test_a_lease_hides_its_etag_and_needs_an_aware_expiry() -> None:
    """The etag is left out of the repr; a naive expiry is refused."""
    lease = Lease(generation=1, expires_at=datetime.now(timezone.utc), owner="o",
                  etag="SECRET-ETAG")
    assert "SECRET-ETAG" not in repr(lease)
    with pytest.raises(ValueError, match="timezone-aware"):
        Lease(generation=1, expires_at=datetime(2026, 1, 1), owner="o", etag="e")


def test_the_default_owner_is_host_and_pid() -> None:
    """Like upstream: hostname:pid, also when lease_store() is given no owner."""
    expected = f"{socket.gethostname()}:{os.getpid()}"
    assert default_owner() == expected
    assert lease_store("file:///srv/replica", {}).owner == expected


@pytest.mark.parametrize(("url", "key"), [
    ("s3://bucket/app?endpoint=http://127.0.0.1:9&region=us-east-1", "app/lock.json"),
    ("s3://bucket/a/b/", "a/b/lock.json"),
    ("s3://bucket", "lock.json"),
    ("s3://bucket/", "lock.json"),
])
def test_the_s3_lock_is_beside_the_replica_path(url: str, key: str) -> None:
    """s3://bucket/path keeps the lease at path/lock.json, as upstream's leaser does."""
    found = lease_store(url, {})
    assert isinstance(found, S3LeaseStore)
    assert (found.bucket, found.key) == ("bucket", key)


@pytest.mark.parametrize(("url", "fix"), [
    ("gs://bucket/app", "s3:// or file://"),
    ("/srv/replica", "s3:// or file://"),
    ("s3:///app", "s3://bucket/path"),
    ("file://", "file:///absolute"),
])
def test_a_replica_without_a_lease_is_a_config_error(url: str, fix: str) -> None:
    """Other schemes, no bucket or no directory: a ConfigError naming the fix."""
    with pytest.raises(ConfigError, match=re.escape(fix)):
        lease_store(url, {})


def test_an_s3_lease_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 lease needs the [s3] extra: said at startup, with the fix."""
    check_lease_possible("s3://bucket/app")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "boto3" else real(name, *a))
    with pytest.raises(ConfigError, match=r"asgi-litestream\[s3\]"):
        check_lease_possible("s3://bucket/app")
    check_lease_possible("file:///srv/replica")


def test_a_held_lease_error_names_holder_and_expiry() -> None:
    """LeaseHeld's message names the holder and the expiry in RFC 3339."""
    until = datetime(2026, 11, 30, 14, 0, tzinfo=timezone.utc)
    error = LeaseHeld("s3://b/lock.json", "web-1:42", until)
    assert "'web-1:42'" in str(error) and "2026-11-30T14:00:00Z" in str(error)
