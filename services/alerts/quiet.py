"""Quiet hours: a wall-clock window in the trader's time zone, possibly across midnight
(22:00-07:00). Time is passed in (ns since the epoch), so tests need no real night."""
from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo


class QuietHours:
    def __init__(self, start: time, end: time, timezone: str = "America/New_York"):
        self.start, self.end = start, end
        self.tz = ZoneInfo(timezone)

    def active(self, now_ns: int) -> bool:
        t = datetime.fromtimestamp(now_ns // 1_000_000_000, tz=self.tz).time()
        if self.start == self.end:
            return False                       # an empty window, not all day
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end   # across midnight
