"""One clock abstraction: wall time live, event time in replay and simulation.

Every time-based rule (session phases, breakers, the 16:25 flatten) asks a Clock,
never `time.time()` directly, so an 8-hour session replayed in seconds still
trips the flatten at 16:25 New York time of the data.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
UTC = timezone.utc


class Clock(Protocol):
    def now_ns(self) -> int: ...


class LiveClock:
    """Wall clock (UTC ns); present it in New York time with `to_ny`."""

    def now_ns(self) -> int:
        return time.time_ns()


class EventClock:
    """Time taken from the data: advanced by event timestamps, never backwards.

    Between events it stands still, which is what replay wants: nothing happens in
    a market that sends nothing.
    """

    def __init__(self, start_ns: int = 0):
        self._now = start_ns

    def advance(self, ts_ns: int) -> int:
        if ts_ns > self._now:
            self._now = ts_ns
        return self._now

    def now_ns(self) -> int:
        return self._now


def make_clock(kind: str) -> LiveClock | EventClock:
    if kind == "live":
        return LiveClock()
    if kind == "event":
        return EventClock()
    raise ValueError(f"clock must be 'live' or 'event', not {kind!r}")


def to_ny(ts_ns: int) -> datetime:
    """ns -> New York datetime, truncated to the microsecond (integer math: a float of ns
    since 1970 rounds, and 23:59:59.9999996 would land in the next day)."""
    s, ns = divmod(int(ts_ns), 1_000_000_000)
    return datetime.fromtimestamp(s, tz=NY).replace(microsecond=ns // 1000)


def from_dt(dt: datetime) -> int:
    """Aware datetime -> ns. A naive one is refused: it has no single meaning."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()} has no time zone")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def fmt_ny(ts_ns: int) -> str:
    """The spec's log timestamp: 2025-01-15 10:30:45.123 (New York)."""
    dt = to_ny(ts_ns)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"
