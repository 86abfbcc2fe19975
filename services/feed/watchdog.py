"""The feed's two timers, without sockets: the stale watchdog (no tick for feed.stale_after_s
inside the session -> reconnect) and the token refresher (reconnect with a fresh token before
the JWT expires).

The session is read from the service clock (event time in simulation and replay, the wall
clock live), never from the wall clock alone: a replay of a New York session run at night
must still watch its feed. The silence itself is timed on the wall (monotonic): a dead feed
is dead in real seconds, while an event clock only moves when data arrives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

IN_SESSION = ("open", "no_new_entries", "flatten")


class StaleWatchdog:
    def __init__(self, stale_after_s: float, mode: str, phase: Callable[[int], str]):
        """`mode`: session | always | never; `phase(ts_ns)` is the session calendar's."""
        self.stale_after_s = stale_after_s
        self.mode = mode
        self.phase = phase
        self.last_tick_mono = 0.0
        self.trips = 0

    def fresh(self, now_mono: float) -> None:
        """A tick arrived, or the hub (re)subscribed: the silence starts again."""
        self.last_tick_mono = now_mono

    def applies(self, clock_ns: int) -> bool:
        if self.mode == "never":
            return False
        if self.mode == "always" or clock_ns <= 0:
            # an event clock before its first event knows no session: a feed that never sent
            # a tick is watched (a reconnect is cheap; a silent start is not)
            return True
        return self.phase(clock_ns) in IN_SESSION

    def check(self, now_mono: float, clock_ns: int, connected: bool) -> float | None:
        """The silent seconds when the feed must reconnect now, else None. A trip restarts
        the silence (the reconnect gets its own stale_after_s)."""
        silent = now_mono - self.last_tick_mono
        if connected and silent > self.stale_after_s and self.applies(clock_ns):
            self.trips += 1
            self.last_tick_mono = now_mono
            return silent
        return None


@dataclass
class TokenRefresher:
    """Reconnect the hub with a fresh token `margin_s` before the current one expires (capped
    at a quarter of the token's lifetime), at most once per half margin."""
    margin_s: float
    exp: float = 0.0                 # epoch seconds the current token expires
    lifetime_s: float = 0.0
    last_refresh_mono: float = 0.0
    refreshes: int = 0

    def on_token(self, exp: float, now_wall: float) -> None:
        if exp != self.exp:
            self.exp = exp
            self.lifetime_s = max(1.0, exp - now_wall)

    def margin(self) -> float:
        return min(self.margin_s, self.lifetime_s / 4)

    def due(self, now_mono: float, now_wall: float, connected: bool) -> float | None:
        """Seconds left on the token when a refresh reconnect is due now, else None."""
        if not self.exp or not connected:
            return None
        margin = self.margin()
        left = self.exp - now_wall
        if left < margin and now_mono - self.last_refresh_mono > max(1.0, margin / 2):
            self.last_refresh_mono = now_mono
            self.refreshes += 1
            return left
        return None


def needs_login(last_reason: str) -> bool:
    """The hub's last failure says the server refused the token: log in again, not refresh."""
    return "401" in last_reason or "nauthorized" in last_reason
