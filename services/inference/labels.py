"""Labels: the outcome of the trade the engine would make, net of the spread and the fees.

`bracket_labels` (the default, "triple barrier"): at the close of bar t the engine would
buy at the ask (or sell at the bid) with the ATR bracket of common/brackets.py (the same
functions it sizes and places brackets with) and hold at most max_holding_s. Each row gets
the net result of both trades, in ticks per contract after the round-trip fee of the
contract it will trade, and a class:
    +1  the long bracket ends with a profit after costs
    -1  the short bracket does
     0  neither (they cannot both: a long target is beyond the short stop)
`t1_ns` is when the later of the two trades ends: the label window [bar end, t1] that a
purged split must keep on one side of a boundary.

`sign_labels` is the old label (sign of the close move over `horizon` bars, no costs),
kept as an option (`--label sign`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.brackets import BracketRule, bracket_exit, bracket_prices, net_ticks
from common.instruments import Instrument
from services.inference.dataset import NS, Rows

CLASSES = [-1, 0, 1]


@dataclass
class Labels:
    y: np.ndarray            # class index into CLASSES (0: -1, 1: 0, 2: +1)
    valid: np.ndarray        # bool: the row can be traded and labelled
    pnl_long: np.ndarray     # float64 net ticks of the long bracket (nan when invalid)
    pnl_short: np.ndarray
    exit_long_ns: np.ndarray  # int64
    exit_short_ns: np.ndarray
    t1_ns: np.ndarray        # int64: end of the label window
    kind: dict               # what the label is, for the model config

    def pnl(self, direction: np.ndarray) -> np.ndarray:
        return np.where(direction > 0, self.pnl_long, np.where(direction < 0, self.pnl_short, 0.0))

    def exit_ns(self, direction: np.ndarray) -> np.ndarray:
        return np.where(direction > 0, self.exit_long_ns, self.exit_short_ns)


def bracket_labels(rows: Rows, rule: BracketRule, inst: Instrument) -> Labels:
    n = len(rows)
    tape = rows.tape
    fee, tv = inst.round_trip_fee_cents, inst.tick_value_cents
    valid = rows.warm & (rows.atr > 0) & (rows.bid > 0) & (rows.ask > rows.bid)
    pl, ps = np.full(n, np.nan), np.full(n, np.nan)
    el, es = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    ends = rows.end_ns
    hold_ns = int(rule.max_holding_s * NS)
    for i in np.flatnonzero(valid):
        start = tape.index_at(int(ends[i]))
        if start >= len(tape):
            valid[i] = False
            continue
        stop, target = rule.distances(float(rows.atr[i]))
        deadline = int(ends[i]) + hold_ns
        for d, entry, pnl, ex_ns in ((1, int(rows.ask[i]), pl, el), (-1, int(rows.bid[i]), ps, es)):
            sp, tp = bracket_prices(entry, d, stop, target)
            ex = bracket_exit(tape, start, d, sp, tp, deadline, rule.limit_fill)
            pnl[i] = net_ticks(d, entry, ex.price_ticks, fee, tv)
            ex_ns[i] = ex.ts_ns
    y = np.where(pl > 0, 2, np.where(ps > 0, 0, 1))
    kind = {"type": "bracket", "rule": "triple barrier: the engine's ATR bracket (common/brackets.py) from the "
                                       "bar close, long at the ask and short at the bid, net of the round-trip fee",
            "stop_atr_multiple": rule.stop_atr_multiple, "min_stop_ticks": rule.min_stop_ticks,
            "max_stop_ticks": rule.max_stop_ticks, "reward_risk": rule.reward_risk,
            "max_holding_s": rule.max_holding_s, "limit_fill": rule.limit_fill,
            "round_trip_fee_cents": fee, "tick_value_cents": tv, "contract_symbol": inst.symbol,
            "horizon_bars": max(1, int(rule.max_holding_s)), "bar_interval_s": 1}
    return Labels(y, valid, pl, ps, el, es, np.maximum(el, es), kind)


def sign_labels(rows: Rows, horizon: int = 30, flat_ticks: int = 0, inst: Instrument | None = None,
                rule: BracketRule | None = None) -> Labels:
    """The old label: sign of close[t+h] - close[t]. P&L fields are the bracket's when `rule` and
    `inst` are given (so the rule can still be judged after costs), else the raw move."""
    n = len(rows)
    c = rows.close
    idx = np.arange(n)
    contiguous = np.zeros(n, dtype=bool)
    ok = idx + horizon < n
    contiguous[ok] = rows.start_ns[idx[ok] + horizon] - rows.start_ns[idx[ok]] == horizon * NS
    mv = np.zeros(n, dtype=np.int64)
    mv[ok] = c[idx[ok] + horizon] - c[idx[ok]]
    y = np.where(mv > flat_ticks, 2, np.where(mv < -flat_ticks, 0, 1))
    if rule is not None and inst is not None:
        b = bracket_labels(rows, rule, inst)
        valid = b.valid & contiguous
        t1 = np.maximum(b.t1_ns, rows.end_ns + horizon * NS)
        pl, ps, el, es = b.pnl_long, b.pnl_short, b.exit_long_ns, b.exit_short_ns
    else:
        valid = rows.warm & contiguous
        t1 = rows.end_ns + horizon * NS
        pl, ps = mv.astype(np.float64), -mv.astype(np.float64)
        el = es = t1
    kind = {"type": "sign", "horizon_bars": horizon, "bar_interval_s": 1, "flat_ticks": flat_ticks,
            "rule": f"+1 if close[t+{horizon}] - close[t] > {flat_ticks} ticks, -1 if < -{flat_ticks}, else 0"}
    return Labels(y, valid, pl, ps, el, es, t1, kind)
