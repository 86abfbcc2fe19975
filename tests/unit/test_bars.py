"""Bar aggregation on event time: OHLC, gaps, late and out-of-order ticks, heartbeat closes, sessions."""
from __future__ import annotations

import numpy as np

from services.inference.bars import BarAggregator, derived_quote, tick_rule
from services.inference.recorded import DEFAULT_DATA, load_trades, recorded_bars

S = 1_000_000_000
T0 = 1_525_699_800 * S   # 2018-05-07 09:30:00 New York


def at(sec: float) -> int:
    return T0 + int(round(sec * S))


def test_one_second_ohlc_volume_sides_and_quote():
    agg = BarAggregator("C", 1)
    assert agg.on_quote(99, 101, at(0.05)) == []       # no price yet: no bar
    assert agg.on_trade(100, 2, +1, at(0.1)) == []
    agg.on_trade(103, 1, +1, at(0.2))
    agg.on_trade(98, 3, -1, at(0.3))
    agg.on_trade(101, 1, 0, at(0.4))
    agg.on_quote(100, 102, at(0.9))
    (bar,) = agg.on_trade(101, 1, +1, at(1.0))        # a tick of the next second closes it
    assert (bar.start_ns, bar.open_ticks, bar.high_ticks, bar.low_ticks, bar.close_ticks) == (T0, 100, 103, 98, 101)
    assert (bar.volume, bar.buy_volume, bar.sell_volume, bar.trades) == (7, 3, 3, 4)
    assert (bar.bid_ticks, bar.ask_ticks, bar.interval_s) == (100, 102, 1)


def test_gap_is_filled_with_flat_bars_at_last_close():
    agg = BarAggregator("C", 1)
    agg.on_trade(100, 1, 1, at(0.5))
    agg.on_quote(99, 100, at(0.6))
    bars = agg.on_trade(104, 1, 1, at(3.2))
    assert [b.start_ns for b in bars] == [at(0), at(1), at(2)]
    for b in bars[1:]:
        assert (b.open_ticks, b.high_ticks, b.low_ticks, b.close_ticks) == (100, 100, 100, 100)
        assert (b.volume, b.trades, b.bid_ticks, b.ask_ticks) == (0, 0, 99, 100)
    (b3,) = agg.on_time(at(4.0))
    assert (b3.start_ns, b3.open_ticks, b3.close_ticks, b3.volume) == (at(3), 104, 104, 1)


def test_gap_longer_than_max_gap_is_a_break_not_filled():
    agg = BarAggregator("C", 1, max_gap_s=10)
    agg.on_trade(100, 1, 1, at(0.5))
    bars = agg.on_trade(101, 1, 1, at(3600.5))        # an hour later: a session break
    assert [b.start_ns for b in bars] == [at(0)]
    assert agg.breaks == 1
    (nxt,) = agg.on_time(at(3601))
    assert nxt.start_ns == at(3600) and nxt.open_ticks == 101


def test_late_tick_for_a_closed_second_is_counted_and_dropped():
    agg = BarAggregator("C", 1)
    agg.on_trade(100, 1, 1, at(0.5))
    (b0,) = agg.on_trade(101, 1, 1, at(1.1))
    assert agg.on_trade(90, 5, -1, at(0.9)) == []      # belongs to the published second 0
    assert agg.on_quote(1, 2, at(0.95)) == []
    assert agg.late_ticks == 2
    (b1,) = agg.on_time(at(2))
    assert (b1.low_ticks, b1.volume, b1.bid_ticks) == (101, 1, 0)   # the late tick left no trace
    assert b0.close_ticks == 100


def test_out_of_order_ticks_inside_the_open_second_are_folded_in_arrival_order():
    agg = BarAggregator("C", 1)
    agg.on_trade(100, 1, 1, at(0.7))
    agg.on_trade(102, 1, 1, at(0.2))                  # earlier timestamp, same open second
    (bar,) = agg.on_time(at(1))
    assert (bar.open_ticks, bar.high_ticks, bar.close_ticks, bar.trades) == (100, 102, 102, 2)
    assert agg.late_ticks == 0


def test_heartbeat_closes_the_bar_exactly_at_the_boundary():
    agg = BarAggregator("C", 1)
    agg.on_trade(100, 1, 1, at(0.5))
    assert agg.on_time(at(0.999999999)) == []
    assert agg.on_time(0) == []                       # heartbeat without exchange time: ignored
    (bar,) = agg.on_time(at(1.0))
    assert bar.start_ns == at(0)
    assert agg.on_time(at(1.0)) == []                 # idempotent


def test_session_start_and_end():
    agg = BarAggregator("C", 1, max_gap_s=300)
    assert agg.on_time(at(5)) == []                   # heartbeats before the first trade: nothing
    agg.on_trade(100, 1, 1, at(10.2))
    assert agg.on_time(at(10.9)) == []
    # session end: the last bar closes on the heartbeat, quiet seconds become flat bars ...
    bars = agg.on_time(at(15))
    assert [b.start_ns for b in bars] == [at(s) for s in range(10, 15)]
    # ... and the next session, 17 hours later, starts fresh without filling the night
    bars = agg.on_trade(105, 1, 1, at(17 * 3600 + 0.5))
    assert [b.start_ns for b in bars] == [at(15)] and agg.breaks == 1
    (first,) = agg.on_time(at(17 * 3600 + 1))
    assert first.open_ticks == 105 and first.start_ns == at(17 * 3600)


def test_minute_bars():
    agg = BarAggregator("C", 60)
    agg.on_trade(100, 1, 1, at(1))
    agg.on_trade(110, 2, -1, at(59.9))
    (m,) = agg.on_trade(105, 1, 1, at(60))
    assert (m.interval_s, m.start_ns, m.open_ticks, m.high_ticks, m.close_ticks, m.volume) == (60, at(0), 100, 110, 110, 3)
    bars = agg.on_time(at(185))
    assert [b.start_ns for b in bars] == [at(60), at(120)] and bars[1].volume == 0


def test_tick_rule_and_derived_quotes():
    assert tick_rule([10, 11, 11, 10, 10, 12]) == [0, 1, 1, -1, -1, 1]
    assert derived_quote(100, 1) == (99, 100)
    assert derived_quote(100, -1) == (100, 101)
    assert derived_quote(100, 0) is None


def test_recorded_session_bars():
    ticks = load_trades(DEFAULT_DATA)
    assert len(ticks) == 74907
    bars = recorded_bars(ticks)
    starts = np.array([b.start_ns for b in bars])
    assert len(bars) == 3.5 * 3600                          # 09:30:00 .. 12:59:59, every second
    assert np.all(np.diff(starts) == S)
    assert sum(b.volume for b in bars) == 74907 == sum(b.trades for b in bars)
    assert sum(b.buy_volume + b.sell_volume for b in bars) == 74907 - 1   # the first trade has no side
    assert all(b.low_ticks <= min(b.open_ticks, b.close_ticks) <= max(b.open_ticks, b.close_ticks) <= b.high_ticks
               for b in bars)
    assert min(b.low_ticks for b in bars) == 2667.75 * 4 and max(b.high_ticks for b in bars) == 2679.25 * 4
