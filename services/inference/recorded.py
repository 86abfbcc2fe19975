"""The recorded trade file as the live pipeline would see it: ticks with derived sides and quotes.

The data (data/real/*_trades.csv.gz: ts_utc, price) has no sizes, sides or quotes, so:
- every trade has size 1;
- the aggressor comes from the tick rule (uptick = buy, downtick = sell, unchanged = previous side);
- the quote after each trade is derived from it: a buy lifted the ask (bid = price - 1 tick),
  a sell hit the bid (ask = price + 1 tick).

`recorded_bars` feeds those ticks through the live BarAggregator. Tests and benchmarks use
it; training reads recordings (and this CSV through services/replay/convert.py) with
services/modelctl/data.py instead, so it sees the feed's own sizes, sides and quotes.
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.instruments import Instrument, INSTRUMENTS
from common.messages import Bar
from services.inference.bars import BarAggregator, derived_quote, tick_rule

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz"


@dataclass
class Ticks:
    ts_ns: np.ndarray        # int64, UTC ns, non-decreasing
    price_ticks: np.ndarray  # int64
    aggressor: np.ndarray    # int8: +1 buy, -1 sell, 0 unknown

    def __len__(self) -> int:
        return len(self.ts_ns)

    def quote(self, i: int) -> tuple[int, int] | None:
        return derived_quote(int(self.price_ticks[i]), int(self.aggressor[i]))


def load_trades(path: str | Path = DEFAULT_DATA, instrument: Instrument = INSTRUMENTS["ES"]) -> Ticks:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    stamps: list[str] = []
    prices: list[int] = []
    with opener(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"ts_utc", "price"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns ts_utc, price; got {reader.fieldnames}")
        for line_no, row in enumerate(reader, start=2):
            try:
                stamps.append(row["ts_utc"].rstrip("Z"))
                prices.append(instrument.to_ticks(row["price"]))
            except Exception as exc:
                raise ValueError(f"{path} line {line_no}: {exc}") from None
    ts = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    px = np.array(prices, dtype=np.int64)
    return Ticks(ts, px, np.array(tick_rule(px), dtype=np.int8))


def recorded_bars(ticks: Ticks, contract: str = "CON.F.US.EP.M18", interval_s: int = 1,
                  max_gap_s: int = 300) -> list[Bar]:
    """Every bar the live aggregator would publish for these ticks, the last one closed too."""
    agg = BarAggregator(contract, interval_s, max_gap_s)
    bars: list[Bar] = []
    for i in range(len(ticks)):
        ts = int(ticks.ts_ns[i])
        bars += agg.on_trade(int(ticks.price_ticks[i]), 1, int(ticks.aggressor[i]), ts)
        q = ticks.quote(i)
        if q is not None:
            bars += agg.on_quote(q[0], q[1], ts)
    if len(ticks):
        bars += agg.on_time(int(ticks.ts_ns[-1]) + interval_s * 1_000_000_000)
    return bars
