"""The feed's stale watchdog and the engine's stale-data breaker, as real
processes against the real simulator: both read the session from the service clock (the
simulator's market time, whatever the wall clock says) and trip within their configured
seconds + 1 s of the last tick. The simulator's `stall` control stops its quotes and trades.

Market days are stated: 2026-11-23 (a Monday) at 10:00 New York is inside the session,
at 20:00 it is outside. The wall clock is never compared with them. The tape runs at 10x so
the data's own quiet spells (a second or two at real speed) stay well under the limits.
"""
from __future__ import annotations

import time

import pytest

from common.bus import Subscriber
from common.config import load_config
from common.messages import FeedStatus, Quote, RiskEvent, Trade
from tests.harness.config import write_config
from tests.harness.procs import ServiceProcess, wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration

IN_SESSION = "2026-11-23T10:00:00"
AFTER_SESSION = "2026-11-23T20:00:00"


class Timed:
    """Envelopes from one bus, stamped with the wall time this test received them."""

    def __init__(self, sub: Subscriber):
        self.sub = sub
        self.got: list[tuple[float, object]] = []

    def poll(self) -> list:
        now = time.monotonic()
        self.got.extend((now, e) for e in self.sub.drain())
        return self.got

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(0.01)

    def last_tick_at(self) -> float:
        return max(t for t, e in self.got if isinstance(e.msg, (Quote, Trade)) and not e.snapshot)

    def mark(self) -> int:
        return len(self.poll())

    def first(self, pred, timeout: float, after: int = 0, also: tuple["Timed", ...] = ()) -> float:
        """The receive time of the first envelope after index `after` matching `pred`,
        polling every 10 ms (and the `also` buses, so their stamps stay true)."""
        end = time.monotonic() + timeout
        seen = after
        while time.monotonic() < end:
            for other in also:
                other.poll()
            got = self.poll()
            for t, e in got[seen:]:
                if pred(e):
                    return t
            seen = len(got)
            time.sleep(0.01)
        raise AssertionError("not seen in time")


def feed_process(tmp_path, sim, **feed):
    cfg_path = write_config(tmp_path, sim, feed={"min_backoff_s": 0.05, "max_backoff_s": 0.5, **feed})
    cfg = load_config(cfg_path)
    feed_bus = Timed(Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap))
    return cfg_path, cfg, feed_bus, ServiceProcess("feed", cfg_path).start()


def ticks_flowing(bus: Timed) -> None:
    wait_for(lambda: sum(1 for _, e in bus.poll() if isinstance(e.msg, (Quote, Trade)) and not e.snapshot) > 20,
             20, what="live ticks")


def is_stale(e) -> bool:
    return isinstance(e.msg, FeedStatus) and e.msg.state == "stale"


def test_feed_watchdog_trips_on_the_market_session_within_its_seconds(tmp_path):
    stale_after = 2.0
    with SimProcess(tmp_path / "sim", speed=10, start_at=IN_SESSION) as sim:
        _, _, bus, proc = feed_process(tmp_path, sim, stale_after_s=stale_after, stale_check="session")
        try:
            ticks_flowing(bus)
            mark = bus.mark()
            sim.control("stall", seconds=8)
            tripped = bus.first(is_stale, 15, after=mark)
            silent = tripped - bus.last_tick_at()
            assert stale_after <= silent + 0.05 and silent <= stale_after + 1.0, silent
        finally:
            proc.terminate()


def test_feed_watchdog_stays_quiet_outside_the_market_session(tmp_path):
    with SimProcess(tmp_path / "sim", speed=10, start_at=AFTER_SESSION) as sim:
        _, _, bus, proc = feed_process(tmp_path, sim, stale_after_s=1.0, stale_check="session")
        try:
            ticks_flowing(bus)
            sim.control("stall", seconds=4)
            bus.pump(4)
            assert not [e for _, e in bus.got if is_stale(e)]       # the market is closed: silence is fine
        finally:
            proc.terminate()


def test_engine_stale_breaker_trips_within_its_seconds(tmp_path):
    """The feed's own watchdog is set long, so the engine's breaker trips on its own. The
    order gateway runs too: the engine asks it for its status, and would wait on a dead one."""
    stale_data = 2.0
    with SimProcess(tmp_path / "sim", speed=10, start_at=IN_SESSION) as sim:
        cfg_path = write_config(tmp_path, sim, risk={"stale_data_s": stale_data},
                                feed={"stale_after_s": 60, "min_backoff_s": 0.05},
                                engine={"needed_services": ["feed"]})
        cfg = load_config(cfg_path)
        feed_bus = Timed(Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap))
        engine_bus = Timed(Subscriber("test", cfg.bus.engine_pub, cfg.bus.engine_snap, topics=[RiskEvent]))
        feed = ServiceProcess("feed", cfg_path).start()
        orders = ServiceProcess("orders", cfg_path).start()
        engine = ServiceProcess("engine", cfg_path).start()
        try:
            ticks_flowing(feed_bus)
            wait_for(lambda: [e for _, e in feed_bus.poll() if isinstance(e.msg, Quote)]
                     and engine_bus.poll() is not None, 5, what="quotes")
            engine_bus.pump(2)          # the engine has seen quotes
            assert not [e for _, e in engine_bus.got if e.msg.kind == "stale_data" and e.msg.active
                        and not e.snapshot]
            mark = engine_bus.mark()
            sim.control("stall", seconds=8)
            tripped = engine_bus.first(lambda e: isinstance(e.msg, RiskEvent) and e.msg.kind == "stale_data"
                                       and e.msg.active and not e.snapshot, 15, after=mark, also=(feed_bus,))
            feed_bus.poll()
            silent = tripped - feed_bus.last_tick_at()
            assert stale_data <= silent + 0.05 and silent <= stale_data + 1.0, silent
            # and it clears with the first quote after the stall
            engine_bus.first(lambda e: isinstance(e.msg, RiskEvent) and e.msg.kind == "stale_data"
                             and not e.msg.active, 20, after=mark)
        finally:
            engine.terminate()
            orders.terminate()
            feed.terminate()
