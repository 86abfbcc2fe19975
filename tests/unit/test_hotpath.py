"""common/hotpath.py: the warm window around the bar boundary and the gc policy (no sockets)."""
from __future__ import annotations

import gc

import pytest

from common.config import HotPathConfig
from common.hotpath import HotPath


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def restore_gc():
    was = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was else gc.disable)()


def test_the_loop_sleeps_until_the_window_then_polls_without_sleeping_and_keeps_warm():
    wall = Clock(100.5)
    hot = HotPath(HotPathConfig(warm_before_ms=2, warm_after_ms=3), wall=wall)
    calls = []
    hot.add_warmer(lambda: calls.append(wall.t))
    assert hot.wait_ms(100) == 100                   # 498 ms to the window: the full wait
    wall.t = 100.9
    assert hot.wait_ms(100) == 97                    # woken 2 ms before the boundary at 101.0
    assert calls == []
    for t in (100.9985, 100.9987, 100.9992, 100.9994, 101.0005, 101.0008):
        wall.t = t
        assert hot.wait_ms(100) == 0 and hot.in_window()
    assert calls == [100.9985, 100.9992, 101.0005]    # the warm-up again every 0.5 ms in the window
    wall.t = 101.0035
    assert not hot.in_window() and hot.wait_ms(100) == 100
    wall.t = 101.999
    assert hot.wait_ms(100) == 0 and len(calls) == 4 # the next boundary warms again
    assert hot.stats["warm_windows"] == 2


def test_warm_up_off_never_shortens_a_wait_and_a_failing_warmer_is_counted_not_raised():
    wall = Clock(100.999)
    assert HotPath(HotPathConfig(warm_before_ms=0), wall=wall).wait_ms(100) == 100
    hot = HotPath(HotPathConfig(), wall=wall)
    hot.add_warmer(lambda: 1 / 0)
    assert hot.wait_ms(100) == 0
    assert hot.stats["warm_errors"] == 1


def test_start_freezes_the_heap_and_takes_collection_over():
    hot = HotPath(HotPathConfig(), wall=Clock(100.5))
    hot.start()
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    hot.stop()
    assert gc.isenabled()


def test_collects_when_idle_outside_the_window_and_when_too_much_piles_up_while_busy():
    wall, mono = Clock(100.5), Clock(0.0)
    hot = HotPath(HotPathConfig(gc_young_limit=5000, gc_full_every_s=60), wall=wall, mono=mono)
    hot.start()
    junk = [[i] for i in range(2000)]             # > 700 new objects
    hot.after_poll(had_events=True)                # busy, under the limit: no collection
    assert hot.stats["gc_young"] == hot.stats["gc_forced_busy"] == 0
    wall.t = 100.9995                              # idle but inside the warm window: none either
    hot.after_poll(had_events=False)
    assert hot.stats["gc_young"] == 0
    wall.t = 100.5
    hot.after_poll(had_events=False)               # idle, outside: a young collection
    assert hot.stats["gc_young"] == 1
    more = [[i] for i in range(8000)]
    hot.after_poll(had_events=True)                # busy but past the limit: collected anyway
    assert hot.stats["gc_forced_busy"] == 1
    mono.t = 61.0
    hot.after_poll(had_events=False)               # idle and the full collection is due
    assert hot.stats["gc_full"] == 1
    del junk, more


def test_idle_tasks_run_only_when_idle_outside_the_window_and_at_most_every_period():
    wall, mono = Clock(100.5), Clock(0.0)
    hot = HotPath(HotPathConfig(), wall=wall, mono=mono)
    ran = []
    hot.add_idle_task(lambda: ran.append(mono.t), every_s=10)
    hot.start()
    mono.t = 11.0
    hot.after_poll(had_events=True)                # busy: not now
    wall.t = 100.9995
    hot.after_poll(had_events=False)               # idle but in the warm window: not now
    assert ran == []
    wall.t = 100.5
    hot.after_poll(had_events=False)
    mono.t = 15.0
    hot.after_poll(had_events=False)               # not due again yet
    assert ran == [11.0]


def test_a_process_that_is_never_idle_still_gets_a_full_collection():
    wall, mono = Clock(100.5), Clock(0.0)
    hot = HotPath(HotPathConfig(gc_full_every_s=60), wall=wall, mono=mono)
    hot.start()
    mono.t = 90.0
    hot.after_poll(had_events=True)                # due, but busy and only 30 s overdue
    assert hot.stats.get("gc_full_forced_busy", 0) == 0
    mono.t = 121.0
    hot.after_poll(had_events=True)                # two periods without idle: collected anyway
    assert hot.stats["gc_full_forced_busy"] == 1


def test_the_window_follows_the_market_bars_and_waits_for_the_closing_tick():
    """Exchange time runs 0.3 s ahead of this box: the window is around the market's second,
    open from 2 ms before it until 3 ms after the tick that closes the bar (at most 30 ms)."""
    wall = Clock(100.0)
    hot = HotPath(HotPathConfig(warm_before_ms=2, warm_after_ms=3, warm_max_ms=30), wall=wall)
    hot.wait_for_close()
    tick = lambda: hot.observe_market(int((wall.t + 0.3) * 1e9))
    tick()                                           # market 100.3
    assert not hot.in_window()
    wall.t = 100.5
    assert hot.wait_ms(500) == 198                   # 200 ms to the market's 101.0, less 2 ms
    wall.t = 100.6985                                # market 100.9985: before the boundary
    assert hot.in_window()
    wall.t = 100.710                                 # 10 ms past it, no tick yet: still waiting
    assert hot.in_window() and hot.wait_ms(100) == 0
    wall.t = 100.712
    tick()                                           # the tick that closes the bar: no more spinning
    hot.bar_event()
    assert not hot.in_window() and hot.wait_ms(100) == 100
    wall.t = 100.7145
    assert hot.quiet()                               # but no garbage collection for 3 ms
    wall.t = 100.716
    assert not hot.quiet()
    assert hot.stats["bars_warm"] == 1
    wall.t = 101.6985                                # the next boundary; no tick comes at all
    assert hot.in_window()
    wall.t = 101.729
    assert hot.in_window()
    wall.t = 101.731                                 # 31 ms past it: waited long enough
    assert not hot.in_window()
    wall.t = 101.800
    tick()                                           # the closing tick, late: a cold bar
    hot.bar_event()
    assert hot.stats["bars_cold"] == 1


def test_a_feed_faster_than_live_or_quiet_turns_the_waiting_off():
    wall = Clock(100.0)
    hot = HotPath(HotPathConfig(warm_before_ms=2, warm_after_ms=3, warm_max_ms=30), wall=wall)
    hot.wait_for_close()
    hot.observe_market(int(100.0 * 1e9))
    wall.t = 101.2
    hot.observe_market(int(140.0 * 1e9))             # 40 s of market time in 1.2 s: a fast replay
    wall.t = 101.2 + 0.9995                          # 0.5 ms before a market second
    assert not hot.in_window() and hot.wait_ms(100) == 100
    wall.t = 103.0
    hot.observe_market(int(141.8 * 1e9))             # back at 1x
    wall.t = 104.0
    hot.observe_market(int(142.8 * 1e9))
    wall.t = 104.1995
    assert hot.in_window()
    wall.t = 110.215                                 # no tick for 6 s: no closing tick is waited for
    assert not hot.in_window()


def test_a_service_that_does_not_compute_the_bar_only_holds_its_garbage_after_the_closing_tick():
    """The engine and the gateway: asleep up to the boundary and after it (no busy-poll: on two
    cores it starved the bus), and no garbage is collected while the prediction and the
    command travel."""
    wall = Clock(100.0)
    hot = HotPath(HotPathConfig(warm_before_ms=2, warm_after_ms=5, warm_max_ms=30), wall=wall)
    calls = []
    hot.add_warmer(lambda: calls.append(wall.t))
    hot.observe_market(int(100.3 * 1e9))
    wall.t = 100.6995                                # 0.5 ms before the market's 101.0
    assert not hot.in_window() and hot.wait_ms(100) == 100
    wall.t = 100.720
    hot.observe_market(int(101.02 * 1e9))            # the closing tick: keep sleeping
    assert hot.wait_ms(100) == 100 and calls == []
    hot.bar_event()
    wall.t = 100.7245
    assert hot.quiet() and not hot.in_window()       # no collection while the bar's work travels
    wall.t = 100.7255
    assert not hot.quiet()
    assert hot.stats["bars_warm"] == 1


def test_the_feeds_heartbeat_closes_a_bar_but_does_not_set_the_market_clock():
    """Its exchange time is held back by the feed's lag: taken as a tick it would move the
    window 250 ms late and make a live feed look faster than 1x."""
    wall = Clock(100.0)
    hot = HotPath(HotPathConfig(warm_before_ms=2, warm_after_ms=3, warm_max_ms=30), wall=wall)
    hot.wait_for_close()
    hot.observe_market(int(100.3 * 1e9))
    wall.t = 100.69
    hot.observe_market(int(100.74 * 1e9), tick=False)           # lags the ticks by 250 ms
    wall.t = 101.2
    hot.observe_market(int(101.5 * 1e9))
    wall.t = 101.6995                                             # 0.5 ms before the market's 102.0
    assert hot.in_window()
    wall.t = 102.1
    hot.observe_market(int(102.0 * 1e9), tick=False)             # a quiet market: the heartbeat closes the bar
    assert hot.quiet()
