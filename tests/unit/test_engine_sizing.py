"""Sizing and stop/target math: table tests and hypothesis properties."""
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.instruments import INSTRUMENTS
from services.engine import risk
from services.engine.sizing import (
    bracket_prices, fill_to_ticks, position_size, spread_ok, stop_distance, target_distance,
)

MES = INSTRUMENTS["MES"]


@pytest.mark.parametrize("atr,want", [(0.0, 4), (1.0, 4), (4.0, 6), (5.0, 8), (4.3, 6), (4.4, 7),
                                      (10.0, 15), (26.7, 40), (100.0, 40)])
def test_stop_distance(atr, want):
    assert stop_distance(atr, 1.5, 4, 40) == want


@pytest.mark.parametrize("stop,rr,want", [(4, 1.5, 6), (5, 1.5, 8), (7, 1.5, 11), (40, 1.5, 60), (6, 2.0, 12)])
def test_target_distance(stop, rr, want):
    assert target_distance(stop, rr) == want


@pytest.mark.parametrize("balance,stop,mc,remaining,want", [
    (100_000, 6, 2, None, 2),       # 2500 / (750 + 74) = 3.03 -> 3, capped at 2
    (100_000, 6, 5, None, 3),
    (100_000, 40, 5, None, 0),      # 2500 / 5074 -> 0: skip, never round up
    (30_000, 6, 2, None, 0),        # 750 / 824 -> 0
    (100_000, 6, 5, 1700, 2),       # daily allowance 1700 / 824 -> 2
    (100_000, 6, 5, 800, 0),        # allowance below one contract's risk
    (0, 6, 2, None, 0),
])
def test_position_size_table(balance, stop, mc, remaining, want):
    assert position_size(balance, stop, MES.tick_value_cents, MES.round_trip_fee_cents, 0.025, mc, remaining) == want


def test_spread_check():
    assert spread_ok(1, 1) and spread_ok(2, 1)
    assert not spread_ok(3, 1)
    assert spread_ok(1, 0) and not spread_ok(2, 0)


def test_bracket_prices_long_short():
    assert bracket_prices(24200, 1, 6, 9) == (24194, 24209)
    assert bracket_prices(24200, -1, 6, 9) == (24206, 24191)
    with pytest.raises(ValueError):
        bracket_prices(24200, 0, 6, 9)


def test_fill_to_ticks_off_grid_average():
    assert fill_to_ticks("6050.25", Decimal("0.25")) == 24201
    assert fill_to_ticks("6050.375", Decimal("0.25")) == 24202   # half up
    assert fill_to_ticks("6050.30", Decimal("0.25")) == 24201


@settings(max_examples=300, deadline=None)
@given(balance=st.integers(0, 10_000_000), atr=st.floats(0, 200, allow_nan=False),
       per_trade=st.floats(0.001, 1.0), mc=st.integers(1, 20), day_pnl=st.integers(-20_000, 20_000),
       max_loss=st.integers(1, 20_000), sym=st.sampled_from(sorted(INSTRUMENTS)))
def test_sized_trade_never_risks_more_than_the_budget(balance, atr, per_trade, mc, day_pnl, max_loss, sym):
    inst = INSTRUMENTS[sym]
    p = risk.RiskParams(max_daily_loss_cents=max_loss, max_risk_per_trade=per_trade, max_contracts=mc)
    plan = risk.plan_entry(p, inst, atr, balance, day_pnl)
    assert 0 <= plan.size <= mc
    assert p.min_stop_ticks <= plan.stop_ticks <= p.max_stop_ticks
    per = plan.stop_ticks * inst.tick_value_cents + inst.round_trip_fee_cents
    assert plan.risk_cents == plan.size * per
    assert plan.risk_cents <= per_trade * balance + 1e-6                    # the per-trade budget
    assert plan.risk_cents <= max(0, max_loss + min(0, day_pnl))       # the daily allowance
    # never rounded up: one more contract would break a limit
    if plan.size < mc:
        more = (plan.size + 1) * per
        assert more > per_trade * balance - 1e-6 or more > max_loss + min(0, day_pnl)


@settings(max_examples=300, deadline=None)
@given(fill=st.integers(1, 100_000), direction=st.sampled_from([1, -1]), atr=st.floats(0, 500, allow_nan=False),
       mult=st.floats(0.1, 5), rr=st.floats(0.1, 5), lo=st.integers(1, 10), span=st.integers(0, 60),
       frac=st.sampled_from(["0", "0.05", "0.1", "0.125", "0.2"]))
def test_stop_and_target_on_grid_and_right_side(fill, direction, atr, mult, rr, lo, span, frac):
    stop = stop_distance(atr, mult, lo, lo + span)
    target = target_distance(stop, rr)
    assert lo <= stop <= lo + span and target >= 1
    # an average fill price off the grid is aligned to the nearest tick first
    fill_price = MES.to_price(fill) + Decimal(frac)
    f = fill_to_ticks(fill_price, MES.tick_size)
    s, t = bracket_prices(f, direction, stop, target)
    for px in (s, t):
        assert isinstance(px, int)
        price = MES.to_price(px)
        assert price % MES.tick_size == 0                     # on the tick grid
    if direction == 1:
        assert MES.to_price(s) < fill_price < MES.to_price(t)
    else:
        assert MES.to_price(t) < fill_price < MES.to_price(s)
