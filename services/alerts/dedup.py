"""Deduplication: the same alert key again within a window is suppressed and counted.

The caller chooses the key: a breaker that trips, clears and trips again is three different
alerts (the key holds the transition number); a gateway re-reporting the same failed flatten
every second is one.
"""
from __future__ import annotations


class Dedup:
    def __init__(self, window_s: float):
        self.window_ns = int(window_s * 1e9)
        self.last: dict[str, int] = {}
        self.suppressed = 0

    def fresh(self, key: str, now_ns: int) -> bool:
        """True when `key` was not let through within the window (and remember it now)."""
        prev = self.last.get(key)
        if prev is not None and now_ns - prev < self.window_ns:
            self.suppressed += 1
            return False
        self.last[key] = now_ns
        if len(self.last) > 10_000:            # keys carry no unbounded data, but be safe
            cutoff = now_ns - self.window_ns
            self.last = {k: t for k, t in self.last.items() if t >= cutoff}
        return True
