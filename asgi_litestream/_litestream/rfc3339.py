"""RFC 3339 times as Litestream (Go) writes them, on every supported Python.

Go writes up to nine fractional digits and ``Z``; Python 3.10's
``datetime.fromisoformat`` takes neither, so they are read by hand, once, here.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))")


def parse_time(text: str) -> datetime:
    """An aware UTC datetime (nanoseconds cut to microseconds); ValueError if ``text``
    is not an RFC 3339 time or not a real one."""
    whole, fraction = _parse(text)
    return whole + timedelta(microseconds=int(fraction[:6].ljust(6, "0")))


def unix_time(text: str) -> float:
    """The same as a unix time, keeping every fractional digit; ValueError likewise."""
    whole, fraction = _parse(text)
    return whole.timestamp() + (float("0." + fraction) if fraction else 0.0)


def _parse(text: str) -> tuple[datetime, str]:
    """The time to the second (UTC), and its fractional digits."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    offset = timedelta(0)
    if not match[8]:
        offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
        offset = -offset if match[9] == "-" else offset
    when = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    return when.astimezone(timezone.utc), match[7] or ""


def format_time(when: datetime) -> str:
    """Go's RFC3339Nano of ``when`` in UTC (trailing fractional zeros dropped)."""
    when = when.astimezone(timezone.utc)
    fraction = f"{when.microsecond:06d}".rstrip("0")
    return (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:"
            f"{when.minute:02d}:{when.second:02d}{'.' + fraction if fraction else ''}Z")
