"""Rendering the metrics: valid exposition whatever the values (pure, no process)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from asgi_litestream._litestream.scrape import litestream_series
from asgi_litestream._primary.group_sync import SyncStats
from asgi_litestream._web.metrics import render_metrics
from tests.helpers import status_snapshot

STATUS = {
    "name": "orders", "status": "running", "state": "running", "role": "leader",
    "restarts": 2, "last_exit_code": None, "last_flush_ok": None, "verification": None,
    "databases": [{"path": '/data/we"ird\\path\n.db', "txid": 9, "replicated_txid": 8,
                   "lag": 1, "behind_s": 0.4, "healthy": None}],
}
LITESTREAM = """# HELP litestream_txid Current transaction ID.
# TYPE litestream_txid gauge
litestream_txid{db="/data/app.db"} 9
# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
"""


def families() -> dict[str, list]:  # type: ignore[type-arg]
    stats = SyncStats()
    stats.record(0.03, ok=True)
    stats.record(20.0, ok=False)
    # As LitestreamScrape keeps it: filtered once per scrape.
    text = render_metrics(status_snapshot(STATUS), sync=stats, sync_rounds=1, flush_seconds=None,
                          litestream="\n".join(litestream_series(LITESTREAM)))
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_labels_are_escaped_and_the_text_parses() -> None:
    """A database path with a quote, a backslash and a newline survives as a label."""
    [txid] = families()["asgi_litestream_txid"]
    assert txid.labels["db"] == '/data/we"ird\\path\n.db'
    assert txid.value == 9


def test_unknown_values_are_left_out_not_made_up() -> None:
    """Unknown health, no exit code, no flush yet: those series are absent."""
    found = families()
    for name in ("asgi_litestream_healthy", "asgi_litestream_last_exit_code",
                 "asgi_litestream_final_flush_seconds", "asgi_litestream_verification_ok"):
        assert name not in found


def test_the_histogram_counts_every_wait_and_failures() -> None:
    """Two waits, one failed past every bucket: +Inf holds both, failures one."""
    found = families()
    buckets = {s.labels["le"]: s.value for s in found["asgi_litestream_durable_sync_seconds"]
               if s.name.endswith("_bucket")}
    assert buckets["0.05"] == 1 and buckets["10.0"] == 1 and buckets["+Inf"] == 2
    assert found["asgi_litestream_durable_sync_failures"][0].value == 1


def test_litestream_series_pass_through_but_not_its_runtime() -> None:
    """litestream_* families come through under their own names; go_* do not."""
    found = families()
    assert found["litestream_txid"][0].value == 9
    assert "go_goroutines" not in found


def test_successive_renders_are_each_a_fresh_render() -> None:
    """A renderer that keeps its families between snapshots gives, for each one, the
    very bytes a fresh render gives: moved delays, a changed position, a database
    gone, another name, Litestream's series changed."""
    from dataclasses import replace

    from asgi_litestream._web.metrics import MetricsBody

    databases = [{"path": f"/data/t{i}.db", "txid": 9, "replicated_txid": 9, "lag": 0,
                  "behind_s": 0.4, "healthy": True} for i in range(4)]
    status = status_snapshot({**STATUS, "databases": databases})
    body, stats = MetricsBody(), SyncStats()
    litestream = "\n".join(litestream_series(LITESTREAM))
    snapshots = [
        status,
        replace(status, databases=tuple(replace(d, behind_s=1.5) for d in status.databases)),
        replace(status, databases=(replace(status.databases[0], txid=10, lag=1,
                                           healthy=None), *status.databases[1:3])),
        replace(status, name="other", databases=status.databases[:1]),
        replace(status, databases=()),
    ]
    for index, snapshot in enumerate(snapshots):
        found = litestream if index % 2 else ""
        fresh = render_metrics(snapshot, sync=stats, sync_rounds=index, flush_seconds=None,
                               litestream=found)
        assert body.render(snapshot, sync=stats, sync_rounds=index, flush_seconds=None,
                           litestream=found).decode() == fresh
        assert {f.name for f in text_string_to_metric_families(fresh)} >= {
            "asgi_litestream_up", "asgi_litestream_durable_sync_seconds"}
