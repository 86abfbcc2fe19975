"""The model's features, twice: incrementally per bar (live) and as one numpy batch (training).

Both follow the same definitions, written once in FEATURES below, and a test
checks they agree on the recorded session. Everything is computed from 1-second
bars in integer ticks; rolling sums are kept in integers, so the two versions
differ only where a float function (sqrt, log1p) is evaluated.

Definitions (bar i, 0-based; windows shorter than N at the start use what exists):
    d_i   = close_i - close_{i-1}                (d_0 = 0)
    tr_i  = max(high_i, close_{i-1}) - min(low_i, close_{i-1})   (tr_0 = high_0 - low_0)
    S_N(x)= sum of x over the last min(N, i+1) bars, n = min(N, i+1)

    ret_k         close_i - close_{max(0, i-k)}                 ticks, k = 1, 5, 15, 60, 300
    rv_N          sqrt(S_N(d^2) / n)                            ticks, N = 60, 300
    atr_60        S_60(tr) / n                                  ticks
    rsi_30        100 S(gain) / (S(gain) + S(loss)), 50 if no move   (Cutler's RSI)
    vwap_dist_300 close - S(typical*volume) / S(volume), 0 if no volume; typical=(h+l+c)/3
    ofi_N         (S(buy_vol) - S(sell_vol)) / (S(buy_vol) + S(sell_vol)), 0 if none; N = 15, 60
    trades_60     log1p(S_60(trades))
    spread        ask - bid of the bar, 0 when no quote was seen

Time of day is not a feature: a model trained on a few sessions cannot learn it, and
a clock value runs off the training range every afternoon the data did not cover (the
old `tod_h`, exempt from the range gate, drove most confident calls after 13:00).
`tod_hours` stays for reports and session logic.

A row is "warm" once the longest window is full (WARMUP bars); earlier rows are
computed but must not be trusted (training drops them, the worker flags them).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np

from common.messages import Bar

NY = ZoneInfo("America/New_York")
RET_HORIZONS = (1, 5, 15, 60, 300)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"ret_{k}" for k in RET_HORIZONS),
    "rv_60", "rv_300", "atr_60", "rsi_30", "vwap_dist_300", "ofi_15", "ofi_60", "trades_60", "spread",
)
N_FEATURES = len(FEATURE_NAMES)
WARMUP = 301  # ret_300 and rv_300 need 301 closes
SESSION_OPEN_S = 9 * 3600 + 30 * 60

_offset_cache: dict[int, int] = {}


def ny_offset_s(ts_s: int) -> int:
    """UTC offset of New York (seconds) at ts_s; cached per UTC hour (offsets change on the hour)."""
    hour = ts_s // 3600
    off = _offset_cache.get(hour)
    if off is None:
        dt = datetime.fromtimestamp(hour * 3600, tz=timezone.utc).astimezone(NY)
        off = int(dt.utcoffset().total_seconds())
        _offset_cache[hour] = off
    return off


def tod_hours(start_ns: int) -> float:
    ts_s = start_ns // 1_000_000_000
    local = (ts_s + ny_offset_s(ts_s)) % 86400
    return (local - SESSION_OPEN_S) / 3600.0


# --------------------------------------------------------------------------
# incremental (live)
# --------------------------------------------------------------------------

class RollingSum:
    """Sum of the last N values pushed, in O(1), with a fixed ring."""

    __slots__ = ("n", "ring", "i", "count", "total")

    def __init__(self, n: int):
        self.n = n
        self.ring = [0] * n
        self.i = 0
        self.count = 0
        self.total = 0

    def push(self, x):
        i = self.i
        self.total += x - self.ring[i]
        self.ring[i] = x
        self.i = i + 1 if i + 1 < self.n else 0
        if self.count < self.n:
            self.count += 1
        return self.total


class FeatureEngine:
    """One bar in, the feature vector out (a float64 array reused between calls)."""

    def __init__(self):
        self.values = np.zeros(N_FEATURES, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget history (after a session break: windows must not span it)."""
        self.count = 0
        self.closes = [0] * (max(RET_HORIZONS) + 1)
        self.ci = 0
        self.prev_close: int | None = None
        self.sq60, self.sq300 = RollingSum(60), RollingSum(300)
        self.tr60 = RollingSum(60)
        self.gain30, self.loss30 = RollingSum(30), RollingSum(30)
        self.pv300, self.vol300 = RollingSum(300), RollingSum(300)
        self.buy15, self.sell15 = RollingSum(15), RollingSum(15)
        self.buy60, self.sell60 = RollingSum(60), RollingSum(60)
        self.trades60 = RollingSum(60)

    @property
    def warm(self) -> bool:
        return self.count >= WARMUP

    def update(self, bar: Bar) -> np.ndarray:
        c, h, lo = bar.close_ticks, bar.high_ticks, bar.low_ticks
        prev = self.prev_close
        if prev is None:
            d, tr = 0, h - lo
        else:
            d = c - prev
            tr = (h if h > prev else prev) - (lo if lo < prev else prev)
        self.prev_close = c
        # ring of the last 301 closes: ret_k looks back k bars (or to the first bar)
        ring = self.closes
        size = len(ring)
        ring[self.ci] = c
        self.count += 1
        n_seen = self.count
        v = self.values
        for j, k in enumerate(RET_HORIZONS):
            back = k if k < n_seen else n_seen - 1
            v[j] = c - ring[(self.ci - back) % size]
        self.ci = (self.ci + 1) % size

        sq = d * d
        s = self.sq60.push(sq)
        v[5] = math.sqrt(s / self.sq60.count)
        s = self.sq300.push(sq)
        v[6] = math.sqrt(s / self.sq300.count)
        v[7] = self.tr60.push(tr) / self.tr60.count
        g = self.gain30.push(d if d > 0 else 0)
        ls = self.loss30.push(-d if d < 0 else 0)
        v[8] = 100.0 * g / (g + ls) if g + ls > 0 else 50.0
        vol = bar.volume
        pv = self.pv300.push((h + lo + c) * vol)
        sv = self.vol300.push(vol)
        v[9] = c - pv / (3 * sv) if sv > 0 else 0.0
        b, s_ = self.buy15.push(bar.buy_volume), self.sell15.push(bar.sell_volume)
        v[10] = (b - s_) / (b + s_) if b + s_ > 0 else 0.0
        b, s_ = self.buy60.push(bar.buy_volume), self.sell60.push(bar.sell_volume)
        v[11] = (b - s_) / (b + s_) if b + s_ > 0 else 0.0
        v[12] = math.log1p(self.trades60.push(bar.trades))
        v[13] = bar.ask_ticks - bar.bid_ticks if bar.bid_ticks > 0 and bar.ask_ticks > 0 else 0
        return v


# --------------------------------------------------------------------------
# batch (training)
# --------------------------------------------------------------------------

BAR_FIELDS = ("start_ns", "open_ticks", "high_ticks", "low_ticks", "close_ticks", "volume",
              "buy_volume", "sell_volume", "trades", "bid_ticks", "ask_ticks")


def bars_to_arrays(bars: list[Bar]) -> dict[str, np.ndarray]:
    return {f: np.fromiter((getattr(b, f) for b in bars), dtype=np.int64, count=len(bars)) for f in BAR_FIELDS}


def _rolling(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum over the last min(n, i+1) values, that count) for every i; exact for int64."""
    cs = np.cumsum(x)
    out = cs.copy()
    out[n:] -= cs[:-n]
    count = np.minimum(np.arange(1, len(x) + 1), n)
    return out, count


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(len(num), empty, dtype=np.float64)
    ok = den != 0
    out[ok] = num[ok] / den[ok]
    return out


def batch_features(a: dict[str, np.ndarray]) -> np.ndarray:
    """Feature matrix [n_bars, N_FEATURES] for contiguous bars (one session segment)."""
    c, h, lo = a["close_ticks"], a["high_ticks"], a["low_ticks"]
    n = len(c)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    if n == 0:
        return out
    idx = np.arange(n)
    for j, k in enumerate(RET_HORIZONS):
        out[:, j] = c - c[np.maximum(idx - k, 0)]
    prev = np.concatenate(([c[0]], c[:-1]))
    d = c - prev
    tr = np.maximum(h, prev) - np.minimum(lo, prev)
    tr[0] = h[0] - lo[0]
    s, cnt = _rolling(d * d, 60)
    out[:, 5] = np.sqrt(s / cnt)
    s, cnt = _rolling(d * d, 300)
    out[:, 6] = np.sqrt(s / cnt)
    s, cnt = _rolling(tr, 60)
    out[:, 7] = s / cnt
    g, _ = _rolling(np.maximum(d, 0), 30)
    ls, _ = _rolling(np.maximum(-d, 0), 30)
    out[:, 8] = _ratio(100.0 * g, g + ls, 50.0)
    vol = a["volume"]
    pv, _ = _rolling((h + lo + c) * vol, 300)
    sv, _ = _rolling(vol, 300)
    vw = _ratio(pv, 3 * sv, np.nan)
    out[:, 9] = np.where(sv > 0, c - vw, 0.0)
    for col, w in ((10, 15), (11, 60)):
        b, _ = _rolling(a["buy_volume"], w)
        s_, _ = _rolling(a["sell_volume"], w)
        out[:, col] = _ratio(b - s_, b + s_, 0.0)
    t, _ = _rolling(a["trades"], 60)
    out[:, 12] = np.log1p(t)
    bid, ask = a["bid_ticks"], a["ask_ticks"]
    out[:, 13] = np.where((bid > 0) & (ask > 0), ask - bid, 0)
    return out


def segments(start_ns: np.ndarray, interval_ns: int = 1_000_000_000) -> list[slice]:
    """Split bar starts into contiguous runs (a gap = a session break: windows restart)."""
    if len(start_ns) == 0:
        return []
    cuts = np.nonzero(np.diff(start_ns) != interval_ns)[0] + 1
    edges = [0, *cuts.tolist(), len(start_ns)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


# --------------------------------------------------------------------------
# 1-minute ATR for the risk manager (not a model feature)
# --------------------------------------------------------------------------

class WilderATR:
    """Wilder's ATR over `period` bars, in ticks: the first value is the mean of the first
    `period` true ranges, then atr = (atr * (period - 1) + tr) / period. 0.0 until warm."""

    def __init__(self, period: int = 14):
        self.period = period
        self.prev_close: int | None = None
        self.n = 0
        self.acc = 0
        self.value = 0.0

    def update(self, bar: Bar) -> float:
        h, lo, prev = bar.high_ticks, bar.low_ticks, self.prev_close
        tr = h - lo if prev is None else max(h, prev) - min(lo, prev)
        self.prev_close = bar.close_ticks
        self.n += 1
        if self.n < self.period:
            self.acc += tr
        elif self.n == self.period:
            self.value = (self.acc + tr) / self.period
        else:
            self.value = (self.value * (self.period - 1) + tr) / self.period
        return self.value
