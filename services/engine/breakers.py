"""Circuit breakers: while any is active no new position is opened.

Every trip and every clear comes back as a RiskEvent for the caller to log and publish.
Time is always passed in (clock ns), so the breakers run on market time in replay.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable

from common.messages import RiskEvent

NS = 1_000_000_000

STALE_DATA = "stale_data"
SILENT_SERVICE = "silent_service"
REJECT_STORM = "reject_storm"
PRICE_SHOCK = "price_shock"
WIDE_SPREAD = "wide_spread"
POSITION_MISMATCH = "position_mismatch"
MANUAL_HALT = "manual_halt"
CRASH_LOOP = "crash_loop"           # supervision stopped a program that kept exiting


@dataclass(frozen=True)
class BreakerParams:
    stale_data_s: float = 5
    silent_service_s: float = 3
    reject_limit: int = 3
    reject_window_s: float = 60
    reject_cooldown_s: float = 300
    price_shock_atr: float = 4
    price_shock_cooldown_s: float = 60
    wide_spread_ticks: int = 4

    @classmethod
    def from_risk(cls, r) -> "BreakerParams":
        return cls(r.stale_data_s, r.silent_service_s, r.reject_limit, r.reject_window_s, r.reject_cooldown_s,
                   r.price_shock_atr, r.price_shock_cooldown_s, r.wide_spread_ticks)


class Breakers:
    def __init__(self, p: BreakerParams, needed_services: list[str] | tuple[str, ...] = (),
                 wall: Callable[[], int] | None = None):
        """`wall` (ns, e.g. time.monotonic_ns) times the silent-service breaker: services beat
        once a second of WALL time, so on the event clock of a sped-up replay every service would
        look silent. None judges heartbeats on the event time passed in (unit tests)."""
        self.p = p
        self.wall = wall
        self.needed = list(needed_services)
        self.active: dict[str, str] = {}          # name -> detail (silent service: one per service)
        self.last_quote_ns: int | None = None
        self.last_seen: dict[str, int] = {}
        self.started_ns: int | None = None
        self.silent_since: int | None = None      # wall time the silent-service watch began
        self.rejects: collections.deque[int] = collections.deque()
        self.reject_until = 0
        self.shock_until = 0
        self.prices: collections.deque[tuple[int, int]] = collections.deque()   # (ns, price ticks)
        self.atr_ticks = 0.0

    # -- state ---------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.active)

    def any_active(self) -> bool:
        return bool(self.active)

    def _set(self, name: str, on: bool, detail: str, severity: str = "WARNING") -> list[RiskEvent]:
        if on and name not in self.active:
            self.active[name] = detail
            return [RiskEvent(name, True, severity, detail)]
        if not on and name in self.active:
            del self.active[name]
            return [RiskEvent(name, False, "INFO", detail)]
        return []

    # -- inputs --------------------------------------------------------------
    def on_quote(self, now_ns: int, bid: int, ask: int, last: int) -> list[RiskEvent]:
        out: list[RiskEvent] = []
        self.last_quote_ns = now_ns
        out += self._set(STALE_DATA, False, "fresh quote")
        spread = ask - bid
        if spread > self.p.wide_spread_ticks:
            out += self._set(WIDE_SPREAD, True, f"spread {spread} ticks > {self.p.wide_spread_ticks}")
        elif bid > 0 and ask > 0:
            out += self._set(WIDE_SPREAD, False, f"spread {spread} ticks back inside")
        price = last or (bid + ask) // 2
        if price > 0:
            out += self.on_price(now_ns, price)
        return out

    def on_price(self, now_ns: int, price: int) -> list[RiskEvent]:
        """A traded or quoted price: a move over price_shock_atr ATRs within one second trips."""
        self.prices.append((now_ns, price))
        while self.prices and self.prices[0][0] < now_ns - NS:
            self.prices.popleft()
        if self.atr_ticks <= 0:
            return []
        lo = min(p for _, p in self.prices)
        hi = max(p for _, p in self.prices)
        return self._shock(now_ns, hi - lo)

    def on_second_bar(self, now_ns: int, high: int, low: int) -> list[RiskEvent]:
        if self.atr_ticks <= 0:
            return []
        return self._shock(now_ns, high - low)

    def _shock(self, now_ns: int, move: int) -> list[RiskEvent]:
        limit = self.p.price_shock_atr * self.atr_ticks
        if move > limit:
            self.shock_until = now_ns + int(self.p.price_shock_cooldown_s * NS)
            self.prices.clear()
            return self._set(PRICE_SHOCK, True, f"{move} ticks in 1 s > {self.p.price_shock_atr:g} ATR "
                                                f"({limit:.1f} ticks); cool-down {self.p.price_shock_cooldown_s:g} s")
        return []

    def on_heartbeat(self, now_ns: int, service: str) -> list[RiskEvent]:
        now_ns = self.wall() if self.wall is not None else now_ns
        self.last_seen[service] = now_ns
        # only a clear here: one socket's backlog can run the clock ahead of the others'
        # heartbeats, so trips are judged in check(), after every input was read
        return self._check_silent(now_ns, trip=False)

    def on_reject(self, now_ns: int, what: str = "") -> list[RiskEvent]:
        self.rejects.append(now_ns)
        while self.rejects and self.rejects[0] <= now_ns - int(self.p.reject_window_s * NS):
            self.rejects.popleft()
        if len(self.rejects) >= self.p.reject_limit:
            self.reject_until = now_ns + int(self.p.reject_cooldown_s * NS)
            return self._set(REJECT_STORM, True, f"{len(self.rejects)} rejects in {self.p.reject_window_s:g} s "
                                                 f"({what}); cool-down {self.p.reject_cooldown_s:g} s")
        return []

    def feed_lost(self, detail: str) -> list[RiskEvent]:
        return self._set(STALE_DATA, True, detail)

    def on_mismatch(self, active: bool, detail: str = "") -> list[RiskEvent]:
        return self._set(POSITION_MISMATCH, active, detail or ("unresolved" if active else "sync resolved it"),
                         "ERROR" if active else "INFO")

    def on_crash_loop(self, active: bool, detail: str) -> list[RiskEvent]:
        """The supervision listener's crash_loop event (retained on its snapshot socket)."""
        if active and CRASH_LOOP in self.active and self.active[CRASH_LOOP] != detail:
            self.active[CRASH_LOOP] = detail      # another program joined the loop: say so
            return [RiskEvent(CRASH_LOOP, True, "ERROR", detail)]
        return self._set(CRASH_LOOP, active, detail, "ERROR")

    def halt(self, reason: str = "") -> list[RiskEvent]:
        return self._set(MANUAL_HALT, True, reason or "operator halt", "WARNING")

    def resume(self, reason: str = "") -> list[RiskEvent]:
        return self._set(MANUAL_HALT, False, reason or "operator resume")

    # -- time ----------------------------------------------------------------
    def _check_silent(self, now_ns: int, trip: bool = True) -> list[RiskEvent]:
        if self.wall is not None:
            now_ns = self.wall()
            if self.silent_since is None:
                self.silent_since = now_ns
            start = self.silent_since
        else:
            if self.started_ns is None:
                if now_ns <= 0:
                    return []
                self.started_ns = now_ns
            start = self.started_ns
        return self._judge_silent(now_ns, start, trip)

    def _judge_silent(self, now_ns: int, start: int, trip: bool) -> list[RiskEvent]:
        limit = int(self.p.silent_service_s * NS)
        silent = [s for s in self.needed if now_ns - self.last_seen.get(s, start) > limit]
        if silent and not trip:
            return []
        if silent:
            detail = "no heartbeat for %gs from %s" % (self.p.silent_service_s, ", ".join(silent))
            if SILENT_SERVICE in self.active:
                before = set(self.active[SILENT_SERVICE].rsplit(" from ", 1)[-1].split(", "))
                self.active[SILENT_SERVICE] = detail
                if set(silent) - before:               # another service went silent: say so
                    return [RiskEvent(SILENT_SERVICE, True, "WARNING", detail)]
                return []
            return self._set(SILENT_SERVICE, True, detail)
        return self._set(SILENT_SERVICE, False, "every service heartbeating")

    def check(self, now_ns: int, in_session: bool) -> list[RiskEvent]:
        """Time-driven trips and clears; call often."""
        out: list[RiskEvent] = []
        if now_ns <= 0:
            return out
        if in_session:
            last = self.last_quote_ns if self.last_quote_ns is not None else self.started_ns
            if last is None:
                self.started_ns = now_ns
                last = now_ns
            if now_ns - last > int(self.p.stale_data_s * NS):
                out += self._set(STALE_DATA, True, f"no quote for {(now_ns - last) / NS:.1f} s in session")
        else:
            out += self._set(STALE_DATA, False, "session closed")
        out += self._check_silent(now_ns)
        if REJECT_STORM in self.active and now_ns >= self.reject_until:
            self.rejects.clear()
            out += self._set(REJECT_STORM, False, "cool-down over")
        if PRICE_SHOCK in self.active and now_ns >= self.shock_until:
            out += self._set(PRICE_SHOCK, False, "cool-down over")
        return out
