"""The status page renderer: escaping, self-containment, the delay chart, restore points
and unknown values. Pure function, no server (tests/integration/test_dashboard.py loads
the page in a real browser)."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any

import pytest

from asgi_litestream._web.dashboard import render_dashboard
from tests.helpers import status_snapshot

NOW = datetime(2026, 11, 30, 12, 20, tzinfo=timezone.utc).timestamp()
VOID = {"meta", "br", "link", "img", "input", "hr"}

STATUS: dict[str, Any] = {
    "name": "litestream", "status": "running", "state": "running", "role": "leader",
    "leader_pid": 4210, "worker_pid": 4210, "healthy": True, "pid": 4242, "uptime_s": 812.4,
    "restarts": 1, "last_exit_code": -9, "last_errors": [], "last_flush_ok": None,
    "version": "0.5.17",
    "verification": {"ok": True, "at": "2026-11-30T12:16:00Z", "age_s": 240.7,
                     "duration_s": 0.41, "reason": None, "databases": []},
    "databases": [{
        "path": "/data/app.db",
        "replica": "s3://bk/app?endpoint=http://127.0.0.1:9000&sas=***",
        "litestream_status": "replicating", "txid": 1843, "replicated_txid": 1843, "lag": 0,
        "behind_s": 0.0, "last_sync_at": "2026-11-30T12:19:58.729Z", "healthy": True,
        "error": None, "last_errors": [],
    }],
}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs, self.children, self.text = tag, attrs, list[Element](), ""

    def all(self) -> list[Element]:
        return [self, *(e for child in self.children for e in child.all())]

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements with this tag (any when None) whose attributes hold these values
        (``class_`` matches one class among several)."""
        found = []
        for element in self.all():
            classes = (element.attrs.get("class") or "").split()
            if (tag in (None, element.tag)
                    and all((v in classes) if k == "class_" else
                            element.attrs.get(k.replace("_", "-")) == v
                            for k, v in attrs.items())):
                found.append(element)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        [found] = self.find(tag, **attrs)
        return found


class Page(HTMLParser):
    """A small DOM; it insists that every element is closed."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.feed(html)
        self.close()
        assert [e.tag for e in self.stack] == ["#document"], "unclosed elements"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (self.stack[-1].tag, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text += data


def render(status: dict[str, Any] | None = None,
           history: dict[str, list[tuple[float, float | None]]] | None = None,
           **kwargs: Any) -> tuple[str, Element]:
    html = render_dashboard(status_snapshot(status or STATUS), history or {}, now=NOW,
                            **kwargs)
    return html, Page(html).root


def with_database(**changes: Any) -> dict[str, Any]:
    status = copy.deepcopy(STATUS)
    status["databases"][0].update(changes)
    return status


def test_a_healthy_page_says_so_at_the_top() -> None:
    """State, health, role and uptime carry stable ids and data- attributes."""
    _, page = render()
    assert page.one(id="state").attrs["data-state"] == "running"
    assert page.one(id="state").text == "running"
    assert page.one(id="health").attrs["data-healthy"] == "true"
    summary = page.one(id="summary")
    assert "ok" in (summary.attrs["class"] or "")
    assert summary.one("dd", data_field="role").text == "leader"
    assert summary.one("dd", data_field="uptime").text == "13 min 32 s"
    assert "ok" in summary.one("dd", data_field="verification").text
    database = page.one(data_database="/data/app.db")
    assert database.one(class_="replica").text == STATUS["databases"][0]["replica"]
    assert database.one("dd", data_field="delay").text == "0.0 s"
    assert database.one("dd", data_field="last-sync").text == "12:19:58 (1.3 s ago)"
    _, page = render(with_database(last_sync_at="2026-11-29T12:19:58Z"))  # not today
    assert page.one("dd", data_field="last-sync").text == "2026-11-29 12:19:58 (1 d 0 h ago)"
    assert page.one("head").one("title").text == "running · Litestream litestream"


def test_hostile_values_are_escaped() -> None:
    """A database path, replica, error line and name full of markup stay text (the state
    and the role are enums: they cannot carry any)."""
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    status = with_database(path=f"/data/{hostile}.db", replica=f"s3://bk/{hostile}",
                           error=hostile, last_errors=[hostile], litestream_status=hostile)
    status.update(name=hostile, last_errors=[hostile])
    html, page = render(status, {f"/data/{hostile}.db": [(NOW - 5, 1.0)]})
    assert "<script" not in html and "<img" not in html
    assert not page.find("script") and not page.find("img")
    assert page.one(id="name").text == hostile
    database = page.one(data_database=f"/data/{hostile}.db")
    assert database.one(class_="replica").text == f"s3://bk/{hostile}"
    assert database.one("svg").attrs["data-samples"] == "1"  # found its history by path
    assert hostile in database.one("ul", class_="errors").text


def test_the_page_is_self_contained_and_has_a_dark_variant() -> None:
    """No script, no external URL in any src/href or CSS; a viewport for phones and a
    prefers-color-scheme: dark block."""
    html, page = render(history={"/data/app.db": [(NOW - 60, 0.5), (NOW, 0.2)]},
                        restore_points={"/data/app.db": []})
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    for element in page.all():
        for name, value in element.attrs.items():
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
                raise AssertionError(f"<{element.tag} {name}={value!r}>")
    style = page.one("style").text
    assert "url(" not in style and "@import" not in style and "//" not in style
    assert re.search(r"@media\s*\(prefers-color-scheme:\s*dark\)", style)
    assert page.one("meta", name="viewport").attrs["content"] == (
        "width=device-width,initial-scale=1")
    assert page.one("meta", http_equiv="refresh").attrs["content"] == "10"
    assert html.startswith("<!DOCTYPE html>")


def test_the_chart_is_drawn_from_the_history() -> None:
    """One point per sample of the last hour, left (an hour ago) to right (now), higher
    for a longer delay; an unknown sample breaks the line; older samples are left out."""
    history: dict[str, list[tuple[float, float | None]]] = {"/data/app.db": [
        (NOW - 7200, 99.0),  # over an hour ago
        (NOW - 3600, 0.0), (NOW - 1800, 4.0), (NOW - 1200, None),
        (NOW - 600, 1.0), (NOW - 300, 2.0), (NOW, 0.5),
    ]}
    _, page = render(with_database(behind_s=0.5), history=history)
    chart = page.one("svg", class_="lag-chart")
    assert chart.attrs["data-samples"] == "5"
    first, second = chart.find("polyline")
    points = [tuple(map(float, p.split(","))) for p in
              [*(first.attrs["points"] or "").split(), *(second.attrs["points"] or "").split()]]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs) and xs[0] == 0 and xs[-1] == 600 and xs[1] == 300
    assert ys[1] == min(ys) == pytest.approx(22.4)  # 4 s of a 5 s scale: 4 + 0.2 * 92
    assert ys[0] == 96  # 0 s: just above the bottom edge, where the line shows
    assert not chart.find("circle") and not chart.find("rect")  # an hour of samples
    note = page.one(data_database="/data/app.db").find("p", class_="note")[0].text
    assert note == "now 0.5 s · max 4.0 s · scale 0\u20135.0 s"


def test_the_chart_says_now_the_delay_the_facts_show() -> None:
    """The chart's "now" is the database's delay, not its last sample (the worst of
    some earlier ten seconds): one figure, one moment."""
    history: dict[str, list[tuple[float, float | None]]] = {"/data/app.db": [
        (NOW - 20, 2.0), (NOW - 10, 0.0)]}
    _, page = render(with_database(behind_s=1.2), history=history)
    database = page.one(data_database="/data/app.db")
    assert database.one("dd", data_field="delay").text == "1.2 s"
    note = database.find("p", class_="note")[0].text
    assert note.startswith("now 1.2 s · max 2.0 s")


def test_relative_times_are_reckoned_from_the_snapshot_moment() -> None:
    """Without a ``now``, the page reads its times as of the snapshot's delays (the last
    poll): a last sync 1.2 s before it reads "1.2 s ago", beside a delay of 1.2 s, and
    the footer says that moment."""
    at = datetime(2026, 11, 30, 12, 19, 58, 800000, tzinfo=timezone.utc).timestamp()
    status = replace(status_snapshot(with_database(
        behind_s=1.2, last_sync_at="2026-11-30T12:19:57.6Z")), as_of=at)
    page = Page(render_dashboard(status, {})).root
    database = page.one(data_database="/data/app.db")
    assert database.one("dd", data_field="delay").text == "1.2 s"
    assert database.one("dd", data_field="last-sync").text == "12:19:57 (1.2 s ago)"
    assert page.one("time", id="now").text == "2026-11-30 12:19:58 UTC"


def test_an_empty_history_draws_an_empty_chart_with_a_note() -> None:
    """No samples: the chart is there, empty, and says why; all-unknown samples too."""
    _, page = render()
    chart = page.one("svg", class_="lag-chart")
    assert chart.attrs["data-samples"] == "0" and not chart.find("polyline")
    assert "no samples in the last hour yet" in page.one(data_database="/data/app.db").text
    _, page = render(history={"/data/app.db": [(NOW - 10, None), (NOW, None)]})
    assert not page.find("polyline")
    assert "delay unknown so far · since 12:19:50 UTC" in page.one(
        data_database="/data/app.db").text
    assert float(page.one("rect", class_="nodata").attrs["width"] or 0) == 598.3  # 10 s ago
    _, page = render(history={"/data/app.db": [(NOW, 0.3)]})
    assert page.one("svg").find("circle")  # a lone sample is a dot


def test_restore_points_are_listed_newest_first() -> None:
    """The newest few, newest first, with time, txids and size; the count of the rest."""
    points = [{"start": f"2026-11-30T11:{i:02d}:00Z", "end": f"2026-11-30T11:{i:02d}:30Z",
               "min_txid": 2 * i + 1, "max_txid": 2 * i + 2, "size": 1000 * i}
              for i in range(10)]
    _, page = render(restore_points={"/data/app.db": points})
    table = page.one("table", class_="restore-points")
    assert table.attrs["data-count"] == "10"
    rows = table.find("tr", class_="restore-point")
    assert len(rows) == 8
    assert rows[0].text.startswith("11:09:30 ") and "19\u201320" in rows[0].text
    assert "8.8 KiB" in rows[0].text and "(1 h 10 min ago)" in rows[0].text
    assert rows[-1].text.startswith("11:02:30 (1 h 17 min ago)")
    assert "10 in all · 2 older not shown" in page.one(data_database="/data/app.db").text


@pytest.mark.parametrize(("points", "shown"), [
    (None, "not known"), ({}, "not known"), ({"/data/app.db": None}, "not known"),
    ({"/data/app.db": []}, "none yet")])
def test_restore_points_unknown_or_none(points: Any, shown: str) -> None:
    """None, no entry or a None entry: not known (not listed); empty: the replica has none."""
    _, page = render(restore_points=points)
    assert page.one(class_="restore-points").text == shown


def test_unknown_values_are_shown_as_unknown() -> None:
    """Health unknown before the first poll; no position, no uptime, no verification."""
    status = with_database(healthy=None, txid=None, replicated_txid=None, lag=None,
                           behind_s=None, last_sync_at=None)
    status.update(healthy=None, uptime_s=None, pid=None, verification=None,
                  last_exit_code=None, state="starting")
    _, page = render(status)
    assert page.one(id="health").attrs["data-healthy"] == "unknown"
    assert page.one(id="health").text == "health unknown"
    assert page.one(id="state").attrs["class"] == "badge warn"
    database = page.one(data_database="/data/app.db")
    assert database.one(class_="health").attrs["data-healthy"] == "unknown"
    for field in ("delay", "local-txid", "replica-txid", "lag-(syncs)"):
        assert database.one("dd", data_field=field).text == "unknown"
        assert database.one("dd", data_field=field).find(class_="unknown")
    assert database.one("dd", data_field="last-sync").text == "never"
    summary = page.one(id="summary")
    assert summary.one("dd", data_field="uptime").text == "not running"
    assert summary.one("dd", data_field="verification").text == "never"
    assert summary.one("dd", data_field="last-flush").text == "none yet"
    assert summary.one("dd", data_field="last-exit-code").text == "none"


def test_trouble_is_red() -> None:
    """Down or unhealthy: the summary and the database are marked bad, errors listed."""
    status = with_database(healthy=False, behind_s=42.5, error="control socket: timeout",
                           last_errors=["sync failed: 503"])
    status.update(healthy=False, status="down", state="failed",
                  last_errors=["exited with code 1"],
                  verification={"ok": False, "at": "2026-11-30T12:00:00Z", "age_s": 1200,
                                "duration_s": 2.5, "reason": "does not restore"})
    _, page = render(status)
    assert "bad" in (page.one(id="summary").attrs["class"] or "")
    assert page.one(id="state").attrs["class"] == "badge bad"
    assert page.one(id="health").text == "unhealthy"
    assert page.one(id="errors").text == "exited with code 1"
    database = page.one(data_database="/data/app.db")
    assert "bad" in (database.attrs["class"] or "")
    assert database.one("dd", data_field="delay").text == "42.5 s"
    assert database.one("dd", data_field="poll-error").text == "control socket: timeout"
    verification = page.one(id="summary").one("dd", data_field="verification").text
    assert verification == "FAILED · 20 min 0 s ago · took 2.5 sdoes not restore"  # <br>
