"""Incremental features (live) against the vectorized batch (training), plus hand-checked values."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from common.messages import Bar
from services.inference.features import (
    FEATURE_NAMES, WARMUP, FeatureEngine, RollingSum, WilderATR, bars_to_arrays, batch_features, segments,
    tod_hours,
)
from services.inference.recorded import load_trades, recorded_bars

S = 1_000_000_000
T0 = 1_525_699_800 * S   # 2018-05-07 09:30:00 EDT
COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def bar(i: int, c: int, h: int | None = None, lo: int | None = None, vol: int = 1, buy: int = 0, sell: int = 0,
        bid: int = 0, ask: int = 0, start: int = T0) -> Bar:
    return Bar("C", 1, start + i * S, c, h if h is not None else c, lo if lo is not None else c, c, vol, buy, sell,
               vol, bid, ask)


def incremental(bars: list[Bar]) -> np.ndarray:
    fe = FeatureEngine()
    return np.array([fe.update(b).copy() for b in bars])


def test_batch_and_incremental_agree_on_the_recorded_session():
    bars = recorded_bars(load_trades())
    inc = incremental(bars)
    bat = batch_features(bars_to_arrays(bars))
    assert inc.shape == bat.shape == (12600, len(FEATURE_NAMES))
    np.testing.assert_allclose(inc, bat, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(bat))
    assert bat[WARMUP:].std(0)[COL["ret_300"]] > 1     # not trivially constant


def test_batch_and_incremental_agree_on_random_bars_with_quiet_stretches():
    rng = random.Random(3)
    bars, c = [], 5000
    for i in range(900):
        quiet = (i // 50) % 3 == 2
        d = 0 if quiet else rng.randint(-2, 2)
        c += d
        vol = 0 if quiet else rng.randint(1, 40)
        buy = rng.randint(0, vol)
        bars.append(bar(i, c, c + rng.randint(0, 2), c - rng.randint(0, 2), vol, buy, vol - buy,
                        *((0, 0) if i < 20 else (c - 1, c + rng.randint(1, 3)))))
    np.testing.assert_allclose(incremental(bars), batch_features(bars_to_arrays(bars)), rtol=1e-9, atol=1e-12)


def test_hand_checked_values():
    bars = [bar(0, 100, 101, 99, vol=2, buy=2), bar(1, 102, 102, 100, vol=2, buy=1, sell=1, bid=101, ask=102),
            bar(2, 101, vol=0)]
    v = incremental(bars)
    assert v[0, COL["ret_1"]] == 0 and v[1, COL["ret_1"]] == 2 and v[2, COL["ret_5"]] == 1
    assert v[1, COL["rv_60"]] == pytest.approx(math.sqrt((0 + 4) / 2))
    assert v[1, COL["atr_60"]] == pytest.approx((2 + 2) / 2)          # tr0 = 101-99, tr1 = 102-100
    assert v[0, COL["rsi_30"]] == 50 and v[1, COL["rsi_30"]] == 100
    assert v[2, COL["rsi_30"]] == pytest.approx(100 * 2 / 3)
    vwap = ((101 + 99 + 100) * 2 + (102 + 100 + 102) * 2) / 3 / 4
    assert v[1, COL["vwap_dist_300"]] == pytest.approx(102 - vwap)
    assert v[1, COL["ofi_15"]] == pytest.approx((3 - 1) / 4)
    assert v[0, COL["spread"]] == 0 and v[1, COL["spread"]] == 1
    assert v[1, COL["trades_60"]] == pytest.approx(math.log1p(4))
    assert "tod_h" not in COL      # time of day is not an input: it cannot be range-gated on a few sessions


def test_time_of_day_in_winter_and_summer():
    assert tod_hours(1_736_951_400 * S) == 0.0     # 2025-01-15 09:30 EST (UTC-5)
    assert tod_hours(1_752_586_200 * S) == 0.0     # 2025-07-15 09:30 EDT (UTC-4)
    assert tod_hours(1_736_951_400 * S + 7 * 3600 * S) == 7.0


def test_warm_flag_and_reset():
    fe = FeatureEngine()
    for i in range(WARMUP - 1):
        fe.update(bar(i, 100 + i % 3))
    assert not fe.warm
    fe.update(bar(WARMUP, 100))
    assert fe.warm
    fe.reset()
    assert not fe.warm and fe.update(bar(0, 500))[COL["ret_300"]] == 0


def test_segments_split_at_gaps():
    starts = np.array([0, 1, 2, 10, 11, 30]) * S
    assert [(s.start, s.stop) for s in segments(starts)] == [(0, 3), (3, 5), (5, 6)]


def test_rolling_sum_and_wilder_atr():
    rs = RollingSum(3)
    assert [rs.push(x) for x in (1, 2, 3, 4, 5)] == [1, 3, 6, 9, 12]
    atr = WilderATR(3)
    vals = [atr.update(bar(i, c, h, lo)) for i, (c, h, lo) in enumerate([(10, 12, 9), (11, 13, 10), (12, 12, 8),
                                                                          (9, 10, 4)])]
    # tr: 3, 3, 4 -> first ATR 10/3; then tr = max(10, 12) - min(4, 12) = 8 -> (10/3 * 2 + 8) / 3
    assert vals[:2] == [0.0, 0.0]
    assert vals[2] == pytest.approx(10 / 3) and vals[3] == pytest.approx((10 / 3 * 2 + 8) / 3)
