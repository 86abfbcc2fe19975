"""Token bucket: `burst` alerts at once, then `per_minute`. Time is passed in (ns)."""
from __future__ import annotations


class TokenBucket:
    def __init__(self, burst: int, per_minute: float, now_ns: int = 0):
        self.capacity = float(burst)
        self.rate_per_ns = per_minute / 60e9
        self.tokens = float(burst)
        self.at = now_ns

    def _refill(self, now_ns: int) -> None:
        if now_ns > self.at:
            self.tokens = min(self.capacity, self.tokens + (now_ns - self.at) * self.rate_per_ns)
            self.at = now_ns

    def take(self, now_ns: int) -> bool:
        """Spend one token if there is one."""
        self._refill(now_ns)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def available(self, now_ns: int) -> bool:
        self._refill(now_ns)
        return self.tokens >= 1.0
