"""Triple-barrier labels and bracket exits on hand-built ticks whose outcome is known."""
from __future__ import annotations

import numpy as np
import pytest

from common.brackets import NO_TRADE, BracketRule, Tape, bracket_exit, bracket_prices, net_ticks
from common.instruments import INSTRUMENTS
from services.engine.sizing import stop_distance as engine_stop_distance
from services.inference.dataset import Rows
from services.inference.features import N_FEATURES
from services.inference.labels import bracket_labels, sign_labels

S = 1_000_000_000
MES = INSTRUMENTS["MES"]
FEE = MES.round_trip_fee_cents / MES.tick_value_cents      # 0.592 ticks


def tape(events: list[tuple[int, int, int, int | None]]) -> Tape:
    """(second, bid, ask, trade price or None)"""
    return Tape(np.array([e[0] * S for e in events], dtype=np.int64), np.array([e[1] for e in events], dtype=np.int64),
                np.array([e[2] for e in events], dtype=np.int64),
                np.array([NO_TRADE if e[3] is None else e[3] for e in events], dtype=np.int64))


def test_the_engine_uses_the_same_bracket_functions():
    assert engine_stop_distance is BracketRule.distances.__globals__["stop_distance"]
    assert BracketRule().distances(8 / 3) == (4, 6)          # 1.5 x 2.667 = 4, target 4 x 1.5 = 6


def test_long_target_needs_a_trade_through_it():
    t = tape([(1, 99, 100, 100), (2, 104, 105, 106), (3, 105, 106, 107), (4, 90, 91, 90)])
    sp, tp = bracket_prices(100, 1, 4, 6)
    ex = bracket_exit(t, 0, 1, sp, tp, 900 * S)
    assert (ex.reason, ex.price_ticks, ex.index) == ("target", 106, 2)      # 106 printed at, 107 through
    assert bracket_exit(t, 0, 1, sp, tp, 900 * S, limit_fill="touch").index == 1


def test_long_stop_fills_at_the_bid_and_wins_a_tie():
    t = tape([(1, 99, 100, None), (2, 95, 96, None), (3, 97, 98, 110)])
    ex = bracket_exit(t, 0, 1, 96, 106, 900 * S)
    assert (ex.reason, ex.price_ticks) == ("stop", 95)                      # gapped through: market at the bid
    t2 = tape([(1, 96, 107, 107)])                                          # stop and target on one event
    assert bracket_exit(t2, 0, 1, 96, 106, 900 * S).reason == "stop"


def test_short_and_max_hold():
    t = tape([(1, 99, 100, 99), (5, 98, 99, None), (20, 97, 98, None)])
    ex = bracket_exit(t, 0, -1, 103, 93, 10 * S)
    assert (ex.reason, ex.price_ticks, ex.ts_ns) == ("max_hold", 98, 20 * S)   # first event after the deadline, at the ask
    assert bracket_exit(t, 0, -1, 103, 93, 100 * S).reason == "end"


def rows_for(bid: int, ask: int, atr: float, t: Tape) -> Rows:
    return Rows("CON.F.US.MES.H26", np.array([0], dtype=np.int64), np.zeros((1, N_FEATURES)), np.array([True]),
                np.array([atr]), np.array([ask], dtype=np.int64), np.array([bid], dtype=np.int64),
                np.array([ask], dtype=np.int64), t)


def test_bracket_label_is_net_of_spread_and_fees():
    # bar [0, 1 s) closes with bid 99 / ask 100, ATR 8/3 -> stop 4, target 6
    t = tape([(1, 99, 100, None), (2, 101, 102, 102), (3, 106, 107, 107)])
    lab = bracket_labels(rows_for(99, 100, 8 / 3, t), BracketRule(), MES)
    assert lab.y[0] == 2                                                    # long wins
    assert lab.pnl_long[0] == pytest.approx(6 - FEE)                        # bought the ask 100, target 106
    assert lab.pnl_short[0] == pytest.approx(-(107 - 99) - FEE)             # sold the bid 99, stop 103 gapped: out at the ask 107
    assert lab.t1_ns[0] == 3 * S


def test_a_move_smaller_than_the_costs_is_class_zero():
    t = tape([(1, 99, 100, None), (2, 100, 101, 101), (1000, 100, 101, None)])
    lab = bracket_labels(rows_for(99, 100, 8 / 3, t), BracketRule(max_holding_s=900), MES)
    assert lab.pnl_long[0] == pytest.approx(0 - FEE)        # out at the bid 100 after 900 s: spread paid back, fee lost
    assert lab.pnl_short[0] == pytest.approx(99 - 101 - FEE)
    assert lab.y[0] == 1


def test_sign_label_is_kept_as_an_option():
    n = 40
    start = np.arange(n, dtype=np.int64) * S
    close = np.arange(n, dtype=np.int64)
    r = Rows("C", start, np.zeros((n, N_FEATURES)), np.ones(n, bool), np.ones(n), close, close - 1, close,
             tape([(0, 1, 2, None)]))
    lab = sign_labels(r, horizon=30)
    assert lab.valid[:10].all() and not lab.valid[10:].any() and (lab.y[:10] == 2).all()
    assert lab.kind["type"] == "sign"
