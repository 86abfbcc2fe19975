"""Market messages (Quote, Trade) -> one training row per closed 1 s bar, and the tape.

The rows go through `BarFeatures`, the worker's own bar, feature and ATR code, so a
feature in training is the number the live worker computes on the same ticks (a test
checks it on a recording). The tape keeps every quote and trade, so labels and the
backtest can walk a bracket tick by tick. Pure: the caller reads the recording.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from common.brackets import NO_TRADE, Tape
from common.messages import Quote, Trade
from services.inference.features import N_FEATURES
from services.inference.worker import BarFeatures

NS = 1_000_000_000


@dataclass
class Rows:
    """One session: a row per closed 1 s bar (features, ATR, book at the close) and its tape."""
    contract: str
    start_ns: np.ndarray      # int64 bar start
    X: np.ndarray             # float64 [n, N_FEATURES]
    warm: np.ndarray          # bool: feature windows full
    atr: np.ndarray           # float64: 1-minute Wilder ATR in ticks (0 until warm)
    close: np.ndarray         # int64
    bid: np.ndarray           # int64: last quote at the bar close (0: none yet)
    ask: np.ndarray
    tape: Tape
    trades: int = 0
    quotes: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.start_ns)

    @property
    def end_ns(self) -> np.ndarray:
        return self.start_ns + NS


def build_rows(messages: Iterable[Quote | Trade], contract: str, atr_period: int = 14,
               max_gap_s: int = 300) -> Rows:
    """Feed every message of one contract through the live bar/feature code, in order."""
    bf = BarFeatures(contract, atr_period, max_gap_s)
    starts, feats, warm, atr, close, bids, asks = [], [], [], [], [], [], []
    t_ts, t_bid, t_ask, t_tr = [], [], [], []
    bid = ask = 0
    last_ns = 0
    n_tr = n_q = 0

    def take(closed) -> None:
        for bar in closed[0]:
            v = bf.update(bar)
            starts.append(bar.start_ns)
            feats.append(v.copy())
            warm.append(bf.warm)
            atr.append(bf.atr.value)
            close.append(bar.close_ticks)
            bids.append(bar.bid_ticks)
            asks.append(bar.ask_ticks)

    for m in messages:
        if m.contract != contract:
            continue
        if isinstance(m, Trade):
            n_tr += 1
            take(bf.on_trade(m.price_ticks, m.size, m.aggressor, m.exch_ns))
            t_ts.append(m.exch_ns); t_bid.append(bid); t_ask.append(ask); t_tr.append(m.price_ticks)
        elif isinstance(m, Quote):
            n_q += 1
            take(bf.on_quote(m.bid_ticks, m.ask_ticks, m.exch_ns))
            bid, ask = m.bid_ticks, m.ask_ticks
            t_ts.append(m.exch_ns); t_bid.append(bid); t_ask.append(ask); t_tr.append(NO_TRADE)
        last_ns = max(last_ns, m.exch_ns)
    if last_ns:
        take(bf.on_time(last_ns + NS))      # the last bar closes once its second is over
    i64 = np.int64
    tape = Tape(np.array(t_ts, dtype=i64), np.array(t_bid, dtype=i64), np.array(t_ask, dtype=i64),
                np.array(t_tr, dtype=i64))
    X = np.array(feats, dtype=np.float64).reshape(-1, N_FEATURES)
    return Rows(contract, np.array(starts, dtype=i64), X, np.array(warm, dtype=bool),
                np.array(atr, dtype=np.float64), np.array(close, dtype=i64), np.array(bids, dtype=i64),
                np.array(asks, dtype=i64), tape, n_tr, n_q)


def build_tape(messages: Iterable[Quote | Trade], contract: str) -> Tape:
    """Only the tape (every quote and trade with the book at that moment), for the backtest."""
    ts, bids, asks, trs = [], [], [], []
    bid = ask = 0
    for m in messages:
        if m.contract != contract:
            continue
        if isinstance(m, Quote):
            bid, ask = m.bid_ticks, m.ask_ticks
            ts.append(m.exch_ns); bids.append(bid); asks.append(ask); trs.append(NO_TRADE)
        elif isinstance(m, Trade):
            ts.append(m.exch_ns); bids.append(bid); asks.append(ask); trs.append(m.price_ticks)
    i64 = np.int64
    return Tape(np.array(ts, dtype=i64), np.array(bids, dtype=i64), np.array(asks, dtype=i64), np.array(trs, dtype=i64))
