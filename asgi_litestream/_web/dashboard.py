"""The status page: the status snapshot as one self-contained HTML document.

No JavaScript and no external asset (it must work offline, on a phone too): inline
CSS with a dark variant, an inline SVG chart of the replication delay per database, and
a meta refresh. Every value is escaped here; the values arrive already redacted (replica
URLs with ``***``) and scrubbed, and the page adds nothing but layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

from .._litestream.rfc3339 import parse_time
from .._primary.database_health import DatabaseStatus
from .._primary.status import StatusSnapshot, VerificationStatus

_HOUR = 3600.0
_W, _H = 600, 100  # the chart's viewBox; CSS stretches it to the card's width
_GOOD_STATES = {"running", "standby"}
_BAD_STATES = {"stopped", "failed"}
_SHOWN = 8  # restore points listed
_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)

_CSS = """
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1b1f24;--dim:#5b6370;--line:#d9dde3;
--ok:#12813a;--warn:#a15c00;--bad:#c62828;--plot:#2563eb}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--card:#181c22;--fg:#e6e9ee;--dim:#9aa3af;
--line:#2c333d;--ok:#4ade80;--warn:#fbbf24;--bad:#f87171;--plot:#60a5fa}}*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:60rem;margin:0 auto;padding:1rem}h1{font-size:1.3rem;margin:0 0 .5rem}
h1 small{color:var(--dim);font-weight:400}.to{margin:.3rem 0 0;color:var(--dim)}
h2{font-size:1.05rem;margin:0}h3{font-size:.8rem;margin:1rem 0 .3rem;color:var(--dim);
text-transform:uppercase;letter-spacing:.05em}.card{background:var(--card);
border:1px solid var(--line);border-radius:.6rem;padding:1rem;margin:0 0 1rem;
border-left-width:.4rem}.card.ok{border-left-color:var(--ok)}
.card.warn{border-left-color:var(--warn)}.card.bad{border-left-color:var(--bad)}
.badges{display:flex;flex-wrap:wrap;gap:.5rem}.badge{display:inline-block;padding:.2rem .7rem;
border-radius:1rem;font-weight:600;border:2px solid currentColor;font-size:1.05rem}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
.card.ok,.card.warn,.card.bad{color:inherit}dl{display:grid;
grid-template-columns:repeat(auto-fill,minmax(8rem,1fr));gap:.6rem 1rem;margin:.8rem 0 0}
dt{font-size:.78rem;color:var(--dim)}dd{margin:0;font-weight:500;overflow-wrap:anywhere}
code,.path{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;
overflow-wrap:anywhere}
.head{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
.unknown,.note{color:var(--dim);font-style:italic}
ul.errors{margin:.2rem 0 0;padding-left:1.2rem;font-size:.85rem;overflow-wrap:anywhere}
ul.errors li{color:var(--bad)}
svg.lag-chart{display:block;width:100%;height:90px;background:var(--bg);border-radius:.3rem}
svg .grid{stroke:var(--line);stroke-dasharray:4 4}svg .nodata{fill:var(--line);opacity:.45}
svg .lag{fill:none;stroke:var(--plot);stroke-width:2;stroke-linejoin:round}
.axis{display:flex;justify-content:space-between;font-size:.75rem;color:var(--dim)}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{text-align:left;padding:.25rem .5rem .25rem 0;border-bottom:1px solid var(--line)}
th{color:var(--dim);font-weight:500}td.num,th.num{text-align:right;white-space:nowrap}
footer{color:var(--dim);font-size:.8rem}small{color:var(--dim)}.ago{white-space:nowrap}
"""


def render_dashboard(
    status: StatusSnapshot,
    history: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    restore_points: Mapping[str, Sequence[Mapping[str, Any]] | None] | None = None,
    now: float | None = None,
) -> str:
    """The whole status page for ``status`` (the status snapshot), with the delay
    ``history`` per database path (unix time, behind_s or None; oldest first) and the
    ``restore_points`` per database path (None, or no entry: not known; empty: none).

    Every relative time of the page ("x s ago", the chart's right edge, the footer) is
    reckoned from one moment, ``now``: by default the one the snapshot's delays are as
    of (the last health poll), so that a database's delay and its last sync's age agree.
    """
    if now is None:
        now = time.time() if status.as_of is None else status.as_of
    healthy, state = status.healthy, status.state.value
    overall = "bad" if healthy is False or not status.running else (
        "ok" if healthy else "warn")
    state_tone = "ok" if state in _GOOD_STATES else ("bad" if state in _BAD_STATES else "warn")
    flush = status.last_flush_ok
    facts = _facts(
        ("status", _text("running" if status.running else "down")),
        ("role", _text(None if status.role is None else status.role.value)),
        ("uptime", _duration(status.uptime_s, "not running")),
        ("restarts", _text(status.restarts)),
        ("last exit code", _text(status.last_exit_code, "none")),
        ("last flush", _text(None, "none yet") if flush is None else
         _tone(bool(flush), "reached the replica", "did not reach the replica")),
        ("verification", _verification(status.verification)),
        ("Litestream", f"{_text(status.version)} · pid {_text(status.pid)}"),
        ("leader worker", _text(status.leader_pid)),
        ("this worker", _text(status.worker_pid)),
    )
    databases = "".join(
        _database(db, history.get(db.path, ()), now,
                  None if restore_points is None else restore_points.get(db.path))
        for db in status.databases)
    name = escape(status.name)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light dark"><meta http-equiv="refresh" content="10">'
        f"<title>{escape(state)} · Litestream {name}</title><style>{_CSS}</style></head>"
        f'<body><main><section class="card {overall}" id="summary">'
        f'<h1>Litestream <small id="name">{name}</small></h1><div class="badges">'
        f'<span id="state" data-state="{escape(state)}" class="badge {state_tone}">'
        f"{escape(state)}</span>{_health_badge(healthy, 'health')}</div>{facts}"
        f'<h3>Last errors</h3>{_errors(status.last_errors, "errors")}</section>'
        f'{databases}<footer>As of <time id="now">{_clock(now)}</time> · refreshes every 10 s'
        "</footer></main></body></html>"
    )


def _database(db: DatabaseStatus, samples: Sequence[tuple[float, float | None]],
              now: float, points: Sequence[Mapping[str, Any]] | None) -> str:
    healthy = db.healthy
    tone = "ok" if healthy else ("warn" if healthy is None else "bad")
    path = escape(db.path)
    facts = [
        ("delay", _seconds(db.behind_s)),
        ("Litestream says", _text(db.litestream_status)),
        ("local txid", _text(db.txid)),
        ("replica txid", _text(db.replicated_txid)),
        ("lag (syncs)", _text(db.lag)),
        ("last sync", _when(db.last_sync_at, now)),
    ]
    if db.error:
        facts.append(("poll error", f'<span class="bad">{_text(db.error)}</span>'))
    return (
        f'<section class="card {tone} database" data-database="{path}">'
        f'<div class="head"><h2 class="path">{path}</h2>{_health_badge(healthy)}</div>'
        f'<p class="to">&rarr; <code class="replica">{_text(db.replica)}</code></p>'
        f"{_facts(*facts)}<h3>Delay, last hour</h3>{_chart(samples, now, db.behind_s)}"
        f"<h3>Restore points</h3>{_restore_points(points, now)}"
        f"<h3>Last errors</h3>{_errors(db.last_errors)}</section>"
    )


def _chart(samples: Sequence[tuple[float, float | None]], now: float,
           delay: float | None) -> str:
    """An SVG line of the delay over the last hour, broken where it was unknown; the
    time before the first sample (a fresh start) is shaded. Its note's "now" is
    ``delay``, the very figure the database's facts show (a sample is the worst delay
    of its ten seconds, not the delay now)."""
    recent = [(t, b) for t, b in samples if now - _HOUR <= t <= now]
    known = [b for _, b in recent if b is not None]
    top = _nice_ceiling(max([*known, 1.0]))

    def x(t: float) -> float:
        return (t - now + _HOUR) / _HOUR * _W

    runs: list[list[tuple[float, float]]] = [[]]
    for t, behind in recent:
        if behind is None:
            runs.append([])
        else:  # 0 s sits just above the bottom edge, where a line still shows
            runs[-1].append((x(t), _H - 4 - max(0.0, min(behind, top)) / top * (_H - 8)))
    drawn = "".join(
        '<polyline class="lag" vector-effect="non-scaling-stroke" points="'
        + " ".join(f"{px:.1f},{py:.1f}" for px, py in run) + '"/>' if len(run) > 1 else
        f'<circle class="lag" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="2"/>'
        for run in runs if run)
    empty = x(recent[0][0]) if recent else _W
    shade = f'<rect class="nodata" x="0" y="0" width="{empty:.1f}" height="{_H}"/>' * (
        empty > 1)
    grid = "".join(f'<line class="grid" x1="0" x2="{_W}" y1="{y}" y2="{y}" '
                   'vector-effect="non-scaling-stroke"/>' for y in (4, _H // 2))
    if known:
        note = (f"now {_seconds(delay)} · max {_seconds(max(known))}"
                f" · scale 0&ndash;{_seconds(top)}")
    else:
        note = "delay unknown so far" if recent else "no samples in the last hour yet"
    if recent and empty > 1:
        note += f" · since {_clock(recent[0][0])[11:]}"
    return (f'<svg class="lag-chart" data-samples="{len(known)}" viewBox="0 0 {_W} {_H}" '
            'preserveAspectRatio="none" role="img"><title>replication delay over the last '
            f'hour</title>{shade}{grid}{drawn}</svg><div class="axis"><span>&minus;60 min</span>'
            f'<span>&minus;30 min</span><span>now</span></div><p class="note">{note}</p>')


def _restore_points(points: Sequence[Mapping[str, Any]] | None, now: float) -> str:
    """The newest points first, a few of them: enough to pick "just before"."""
    if not points:
        return f'<p class="note restore-points">{"not known" if points is None else "none yet"}</p>'
    rows = "".join(
        f'<tr class="restore-point"><td>{_when(p.get("end"), now)}</td>'
        f'<td class="num">{_text(p.get("min_txid"))}&ndash;{_text(p.get("max_txid"))}</td>'
        f'<td class="num">{_size(p.get("size"))}</td></tr>' for p in reversed(points[-_SHOWN:]))
    more = f" · {len(points) - _SHOWN} older not shown" if len(points) > _SHOWN else ""
    return (f'<table class="restore-points" data-count="{len(points)}"><thead><tr>'
            '<th>replica got it</th><th class="num">txids</th><th class="num">size</th>'
            f'</tr></thead><tbody>{rows}</tbody></table><p class="note">{len(points)} in all'
            f"{more}</p>")


def _facts(*facts: tuple[str, str]) -> str:
    """A <dl>; each value's <dd> carries data-field (the label, dashed) for tests."""
    return "<dl>" + "".join(
        f'<div><dt>{escape(label)}</dt><dd data-field="{label.lower().replace(" ", "-")}">'
        f"{value}</dd></div>" for label, value in facts) + "</dl>"


def _text(value: Any, missing: str = "unknown") -> str:
    """``value`` escaped; None shown as ``missing``, marked as such."""
    if value is None:
        return f'<span class="unknown">{escape(missing)}</span>'
    return escape(str(value))


def _tone(good: bool, yes: str, no: str) -> str:
    return f'<span class="ok">{yes}</span>' if good else f'<span class="bad">{no}</span>'


def _ident(element_id: str | None) -> str:
    return f' id="{element_id}"' if element_id else ""


def _health_badge(healthy: Any, element_id: str | None = None) -> str:
    word, tone = {True: ("healthy", "ok"), False: ("unhealthy", "bad")}.get(
        healthy, ("health unknown", "warn"))
    value = "unknown" if healthy is None else str(bool(healthy)).lower()
    return (f'<span{_ident(element_id)} class="badge health {tone}" data-healthy="{value}">'
            f"{word}</span>")


def _verification(found: VerificationStatus | None) -> str:
    if found is None:
        return _text(None, "never")
    text = _tone(bool(found.ok), "ok", "FAILED")
    if found.age_s is not None:
        text += f" · {_duration(found.age_s, '')} ago"
    if found.duration_s is not None:
        text += f" · took {_seconds(found.duration_s)}"
    return text + (f"<br><small>{_text(found.reason)}</small>" if found.reason else "")


def _errors(lines: Any, element_id: str | None = None) -> str:
    if not lines:
        return f'<p class="note errors"{_ident(element_id)}>none</p>'
    items = "".join(f"<li>{_text(line)}</li>" for line in lines)
    return f'<ul class="errors"{_ident(element_id)}>{items}</ul>'


def _duration(seconds: Any, missing: str, *, exact: bool = False) -> str:
    """3.2 s, 4 min 12 s, 2 h 5 min, 3 d 4 h; None shown as ``missing``."""
    if not isinstance(seconds, (int, float)):
        return _text(None, missing)
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s" if exact or s < 10 else f"{s:.0f} s"
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                      ("min", 60, "s", 1)):
        if s >= size:
            return f"{int(s // size)} {unit} {int(s % size // sub_size)} {sub}"
    raise AssertionError(s)  # pragma: no cover


def _when(value: Any, now: float) -> str:
    """An RFC 3339 time to the second, and how long ago it was, when it parses."""
    if not value:
        return _text(None, "never")
    try:
        at = parse_time(str(value).strip().replace(" ", "T", 1))
        shown = at.strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return _text(value)
    if shown[:10] == _clock(now)[:10]:
        shown = shown[11:]  # today (UTC, as the footer says): the time is enough
    ago = _duration(max(now - at.timestamp(), 0.0), "")
    return (f'<time datetime="{escape(str(value))}">{shown}</time> '
            f'<small class="ago">({ago} ago)</small>')


def _seconds(value: float | None) -> str:
    return _duration(value, "unknown", exact=True)


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return _text(None)
    power = min(int(math.log(max(size, 1), 1024)), 3)
    return f"{size / 1024 ** power:.1f} {' KMG'[power]}iB" if power else f"{size} B"


def _nice_ceiling(seconds: float) -> float:
    """The chart's scale: the first round duration at or above ``seconds``."""
    return next((nice for nice in _NICE if nice >= seconds), seconds)
